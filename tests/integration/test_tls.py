# Client TLS (issue 5, docs/deployment.md "TLS"): psql, psycopg and pgjdbc with sslmode=verify-full against a test
# CA made at test time (tls_certs.py); the wrong CA is refused; tls.mode require/disable; SIGHUP reloads the
# certificate for new connections while live sessions go on; plaintext passwords from another host.
#
# Every tokengate here is an instance of its own, started like the session fixture (upstream over the cluster's
# Unix socket, `--upstream-auth trust`), plus --tls-cert/--tls-key. Tokens are minted through that instance (its
# own data dir and keys). Tokens appear in messages only through mask(); key files are never read or printed.
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest

import pgwire
from conftest import (PSQL, PgCluster, Target, TokengateProcess, TokengateUnavailable, _cleanup_tmp, _cleanups,
                      binary_has_flag, clean_env, create_token, mask, remember_secret, tokengate_binary)
from tls_certs import CertError, make_test_pki

REQUIRE_MSG = "tokengate requires an encrypted connection"
PLAINTEXT_MSG = "tokengate does not accept passwords over an unencrypted connection from another host"


# ---------------------------------------------------------------- fixtures and helpers


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def tls_binary() -> Path:
    binary = tokengate_binary()
    if not binary_has_flag(binary, "--tls-cert"):
        pytest.skip("this tokengate binary has no --tls-cert (TLS is issue 5)")
    return binary


def start_instance(pg: PgCluster, extra: list[str], host: str = "127.0.0.1") -> TokengateProcess:
    """A tokengate like the session fixture's (trust mode over the Unix socket) with `extra` flags, started."""
    proc = TokengateProcess(tls_binary(), (str(pg.socket_dir), pg.port),
                            ["--upstream-auth", "trust", "--max-failed-logins", "100000", *extra])
    proc.host = host
    _cleanups.append(proc.stop)
    try:
        proc.start()
    except TokengateUnavailable as e:
        proc.stop()
        pytest.fail(str(e), pytrace=False)
    return proc


@pytest.fixture(scope="module")
def pki():
    d = Path(tempfile.mkdtemp(prefix="tg-pki-"))
    _cleanups.append(lambda: _cleanup_tmp(d))
    try:
        try:
            made = make_test_pki(d)
        except CertError as e:
            pytest.skip(f"cannot make test certificates: {e}")
        yield made
    finally:
        _cleanup_tmp(d)


@pytest.fixture(scope="module")
def tls_tg(pg: PgCluster, pki) -> TokengateProcess:
    """tls.mode allow (the default) with the test CA's localhost certificate."""
    proc = start_instance(pg, ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)])
    yield proc
    proc.stop()


@pytest.fixture
def instances():
    """Instances for one test: instances(pg, extra_args) -> started TokengateProcess; all stopped afterwards."""
    made: list[TokengateProcess] = []

    def make(pg: PgCluster, extra: list[str], host: str = "127.0.0.1") -> TokengateProcess:
        proc = start_instance(pg, extra, host)
        made.append(proc)
        return proc

    yield make
    for p in made:
        p.stop()


def token_for(tg: TokengateProcess, user: str = "analyst", duration: str = "1h") -> str:
    """A token minted through `tg` itself (over loopback TCP, password login)."""
    return create_token(tg.target(), user=user, name=uniq("tls"), duration=duration)[1]


def tls_conninfo(tg: TokengateProcess, pki, password: str, host: str = "localhost", user: str = "analyst",
                 sslmode: str = "verify-full", rootcert: Path | None = None, **kw) -> str:
    return psycopg.conninfo.make_conninfo(
        host=host, port=tg.port, user=user, password=password, dbname="postgres", connect_timeout=10,
        sslmode=sslmode, sslrootcert=str(rootcert or pki.ca_cert), **kw)


def ssl_attribute(conn: psycopg.Connection, name: str) -> str | None:
    """libpq's PQsslAttribute (psycopg 3.1 does not wrap it)."""
    import ctypes

    from psycopg.pq import _pq_ctypes

    fn = _pq_ctypes.pq.PQsslAttribute
    fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    fn.restype = ctypes.c_char_p
    ptr = conn.pgconn._pgconn_ptr  # the python implementation's PGconn*
    v = fn(ctypes.cast(ptr, ctypes.c_void_p), name.encode())
    return v.decode() if v is not None else None


def connect_error(conninfo: str) -> str:
    """The message of a libpq connection that must fail. The exception is not kept: its traceback would keep
    libpq's half-open socket alive (libpq closes it only in PQfinish), and tokengate rightly waits for such a
    connection at SIGTERM (until auth_timeout), which would make the instance's teardown hit SIGKILL."""
    try:
        psycopg.connect(conninfo).close()
    except psycopg.OperationalError as e:
        return str(e)
    raise AssertionError("connected although a failure was expected (connection string not shown: it may hold a "
                         "token)")


def ssl_request_answer(host: str, port: int) -> bytes:
    with pgwire.WireConnection(host, port) as c:
        c.send(pgwire.ssl_request())
        return c.read_bytes(1)


def tls_wire(host: str, port: int, cafile: Path, server_hostname: str = "localhost") -> pgwire.WireConnection:
    """A raw connection after SSLRequest → 'S' and a verified TLS handshake (pgwire then speaks through TLS)."""
    c = pgwire.WireConnection(host, port)
    try:
        c.send(pgwire.ssl_request())
        answer = c.read_bytes(1)
        assert answer == b"S", f"SSLRequest answered {answer!r}"
        assert c.buf == b"", f"bytes after 'S' before the handshake: {c.buf[:40]!r}"
        ctx = ssl.create_default_context(cafile=str(cafile))
        c.sock = ctx.wrap_socket(c.sock, server_hostname=server_hostname)
    except BaseException:
        c.close()
        raise
    return c


def der(cert_path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert_path.read_text())


def peer_cert(tg: TokengateProcess, cafile: Path) -> bytes:
    with tls_wire(tg.host, tg.port, cafile) as c:
        return c.sock.getpeercert(binary_form=True)


# ---------------------------------------------------------------- verify-full from each client


def test_psql_verify_full_with_token(tls_tg: TokengateProcess, pki):
    token = token_for(tls_tg)
    conninfo = f"host=localhost port={tls_tg.port} user=analyst dbname=postgres sslmode=verify-full " \
               f"sslrootcert={pki.ca_cert}"
    p = subprocess.run([PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-A", "-t", "-d", conninfo,
                        "-c", "select current_user, session_user", "-c", r"\conninfo"],
                       capture_output=True, text=True, timeout=60, env=clean_env(PGPASSWORD=token))
    assert p.returncode == 0, f"psql verify-full with PGPASSWORD=<token {mask(token)}> failed: {p.stderr}"
    assert "analyst|analyst" in p.stdout, p.stdout
    assert "SSL connection (protocol: TLSv1." in p.stdout, f"\\conninfo does not mention TLS: {p.stdout}"
    assert any(f"protocol: {v}," in p.stdout for v in ("TLSv1.2", "TLSv1.3")), p.stdout


def test_psycopg_verify_full_with_token(tls_tg: TokengateProcess, pki):
    token = token_for(tls_tg)
    with psycopg.connect(tls_conninfo(tls_tg, pki, token), autocommit=True) as conn:
        assert conn.execute("select current_user, session_user").fetchone() == ("analyst", "analyst")
        assert conn.pgconn.ssl_in_use, "psycopg says the connection is not encrypted"
        assert ssl_attribute(conn, "protocol") in ("TLSv1.2", "TLSv1.3")
        cipher = ssl_attribute(conn, "cipher") or ""
        # docs/deployment.md: forward-secret AEAD ciphers only.
        assert "GCM" in cipher or "CHACHA20" in cipher, f"cipher {cipher}"
        assert conn.execute("SHOW API TOKENS").fetchall()


def test_psycopg_verify_full_with_password(tls_tg: TokengateProcess, pki):
    with psycopg.connect(tls_conninfo(tls_tg, pki, "analyst"), autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select 40 + 2").fetchone() == (42,)


def test_psycopg_unrelated_ca_is_refused(tls_tg: TokengateProcess, pki):
    err = connect_error(tls_conninfo(tls_tg, pki, "analyst", rootcert=pki.other_ca_cert))
    assert "certificate verify failed" in err, err


def test_psycopg_verify_full_by_ip_address(tls_tg: TokengateProcess, pki):
    # The certificate has SAN IP:127.0.0.1 (tls_certs.py); libpq checks it for a numeric host.
    token = token_for(tls_tg)
    with psycopg.connect(tls_conninfo(tls_tg, pki, token, host="127.0.0.1"), autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select current_user").fetchone() == ("analyst",)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_python_ssl_sees_the_configured_certificate(tls_tg: TokengateProcess, pki):
    assert peer_cert(tls_tg, pki.ca_cert) == der(pki.server_cert)
    # TLS 1.1 and older are not accepted (the client offers nothing newer).
    c = pgwire.WireConnection(tls_tg.host, tls_tg.port)
    try:
        c.send(pgwire.ssl_request())
        assert c.read_bytes(1) == b"S"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            ctx.set_ciphers("ALL:@SECLEVEL=0")
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ssl.SSLError, ValueError) as e:
            pytest.skip(f"this Python/OpenSSL cannot offer TLS 1.1: {e}")
        with pytest.raises((ssl.SSLError, OSError)) as ei:
            ctx.wrap_socket(c.sock, server_hostname="localhost")
        # The server's alert, not the client's own refusal to offer old versions.
        assert "PROTOCOL_VERSION" in str(ei.value) or "version" in str(ei.value), str(ei.value)
    finally:
        c.close()


def test_no_channel_binding_offered(tls_tg: TokengateProcess, pki):
    # Never offer SCRAM-SHA-256-PLUS through the proxy, so channel_binding=require cannot succeed.
    token = token_for(tls_tg)
    err = connect_error(tls_conninfo(tls_tg, pki, token, channel_binding="require"))
    assert "channel binding" in err, err
    with tls_wire(tls_tg.host, tls_tg.port, pki.ca_cert) as c:
        r = pgwire.login(c, "analyst", "analyst")
        assert r.ok, r.error
        for m in r.messages:
            assert not (m.tag == b"R" and b"SCRAM-SHA-256-PLUS" in m.body), f"-PLUS offered: {r.auth_requests}"


def test_pgjdbc_verify_full_with_token(tls_tg: TokengateProcess, pki):
    import jdbc

    token = token_for(tls_tg)
    ssl_params = f"ssl=true&sslmode=verify-full&sslrootcert={pki.ca_cert}"
    rc, f, stderr = jdbc.run("login", "localhost", tls_tg.port, "analyst", token, ssl_params=ssl_params)
    assert rc == 0, f"pgjdbc verify-full token login failed: {f.get('error_message')} {stderr}"
    assert f["current_user"] == ["analyst"] and f["session_user"] == ["analyst"], f
    # The same with the unrelated CA: the handshake is refused, which shows that TLS was really used above.
    rc, f, stderr = jdbc.run("login", "localhost", tls_tg.port, "analyst", token,
                             ssl_params=f"ssl=true&sslmode=verify-full&sslrootcert={pki.other_ca_cert}")
    assert rc == 3, f"pgjdbc accepted a certificate from an unrelated CA: {f} {stderr}"
    msg = " ".join(f.get("error_message", []))
    assert "SSL" in msg or "PKIX" in msg or "certificat" in msg, f


def test_allow_mode_still_accepts_plain_connections(tls_tg: TokengateProcess):
    with psycopg.connect(tls_tg.target().conninfo(user="analyst", sslmode="disable"), autocommit=True) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)


# ---------------------------------------------------------------- tls.mode require / disable


def test_tls_mode_require(pg: PgCluster, pki, instances):
    tg = instances(pg, ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
                        "--tls-mode", "require"])
    # Raw: a plain startup is refused with FATAL 28000, and the connection closed.
    with tg.target().wire() as c:
        r = pgwire.login(c, "analyst", "analyst")
        assert r.error is not None, f"a plain login succeeded with --tls-mode require ({r.auth_requests})"
        assert r.error.severity == "FATAL" and r.error.sqlstate == "28000", r.error
        assert r.error.message == REQUIRE_MSG, r.error
        assert r.auth_requests == [], f"a password was asked for before refusing: {r.auth_requests}"
        _rest, closed = c.read_until_closed(timeout=5)
        assert closed
    # libpq with sslmode=disable sees the same message.
    err = connect_error(tg.target().conninfo(user="analyst", sslmode="disable"))
    assert REQUIRE_MSG in err, err
    # sslmode=require (no verification) and verify-full work, with a token too.
    token = token_for_tls(tg, pki)
    with psycopg.connect(tg.target().conninfo(user="analyst", password=token, sslmode="require"),
                         autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select current_user").fetchone() == ("analyst",)
    with psycopg.connect(tls_conninfo(tg, pki, "analyst"), autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def token_for_tls(tg: TokengateProcess, pki) -> str:
    """A token minted over TLS (for an instance that refuses plain connections)."""
    with psycopg.connect(tls_conninfo(tg, pki, "analyst"), autocommit=True) as conn:
        row = conn.execute(f"CREATE API TOKEN {uniq('req')} MAX DURATION '1h'").fetchone()
    return remember_secret(row[1])


def test_tls_mode_disable_with_a_certificate(pg: PgCluster, pki, instances):
    tg = instances(pg, ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
                        "--tls-mode", "disable"])
    assert ssl_request_answer(tg.host, tg.port) == b"N"
    err = connect_error(tg.target().conninfo(user="analyst", sslmode="require"))
    assert "server does not support SSL" in err, err
    with psycopg.connect(tg.target().conninfo(user="analyst", sslmode="prefer"), autocommit=True) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)


def test_tls_mode_require_without_a_certificate_does_not_start(pg: PgCluster):
    # docs/deployment.md: require "needs tls.cert and tls.key".
    proc = TokengateProcess(tls_binary(), (str(pg.socket_dir), pg.port),
                            ["--upstream-auth", "trust", "--tls-mode", "require"])
    _cleanups.append(proc.stop)
    try:
        proc.launch()
        with pytest.raises(TokengateUnavailable):
            proc.wait_ready()
        assert proc.proc.poll() not in (None, 0), "tokengate exited 0 with --tls-mode require and no certificate"
    finally:
        proc.stop()


# ---------------------------------------------------------------- SIGHUP reload


def wait_for_cert(tg: TokengateProcess, cafile: Path, want: bytes, within: float = 5.0) -> bytes:
    deadline = time.monotonic() + within
    while True:
        got = peer_cert(tg, cafile)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_sighup_reloads_the_certificate(pg: PgCluster, pki, instances):
    d = Path(tempfile.mkdtemp(prefix="tg-reload-"))
    _cleanups.append(lambda: _cleanup_tmp(d))
    try:
        cert, key = d / "tls.crt", d / "tls.key"
        shutil.copy2(pki.server_cert, cert)
        shutil.copy2(pki.server_key, key)
        tg = instances(pg, ["--tls-cert", str(cert), "--tls-key", str(key)])
        assert peer_cert(tg, pki.ca_cert) == der(pki.server_cert)
        token = token_for(tg)
        live = tls_wire(tg.host, tg.port, pki.ca_cert)
        try:
            r = pgwire.login(live, "analyst", token)
            assert r.ok, f"token login over TLS with {mask(token)}: {r.error}"
            assert pgwire.data_rows_text(live.simple_query("select 1")) == [("1",)]

            new_cert, new_key = pki.issue_server("second", cn="localhost-second")
            # Replace both files atomically (a rename), as a certificate manager would.
            shutil.copy2(new_cert, d / "tls.crt.new")
            shutil.copy2(new_key, d / "tls.key.new")
            os.replace(d / "tls.key.new", key)
            os.replace(d / "tls.crt.new", cert)
            mark = tg.log_mark()
            tg.proc.send_signal(signal.SIGHUP)
            got = wait_for_cert(tg, pki.ca_cert, der(new_cert))
            assert got == der(new_cert), \
                f"a new connection still gets the old certificate 5 s after SIGHUP; log:\n{tg.log_since(mark)}"
            assert tg.alive(), "tokengate exited on SIGHUP"
            # The session from before the reload goes on.
            assert pgwire.data_rows_text(live.simple_query("select 2")) == [("2",)]
            assert live.sock.getpeercert(binary_form=True) == der(pki.server_cert)
            # New sessions over the new certificate log in as before.
            with psycopg.connect(tls_conninfo(tg, pki, token), autocommit=True) as conn:
                assert conn.execute("select current_user").fetchone() == ("analyst",)

            # Unloadable files: the log says why and the current certificate stays in use.
            cert.write_text("not a certificate\n")
            mark = tg.log_mark()
            tg.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not tg.log_since(mark).strip():
                time.sleep(0.1)
            time.sleep(0.3)
            logged = tg.log_since(mark)
            assert logged.strip(), "nothing logged about a certificate that cannot be loaded"
            assert "-----BEGIN" not in logged, "the log contains PEM material"
            assert tg.alive(), f"tokengate exited on SIGHUP with a broken certificate; log:\n{logged}"
            assert peer_cert(tg, pki.ca_cert) == der(new_cert), "the certificate in use changed to a broken one"
            assert pgwire.data_rows_text(live.simple_query("select 3")) == [("3",)]
        finally:
            live.close()
    finally:
        _cleanup_tmp(d)


# ---------------------------------------------------------------- plaintext passwords


def test_plaintext_password_from_loopback_with_allow_false(pg: PgCluster, instances):
    # Loopback clients are never refused for using plain TCP (docs/deployment.md "Plaintext passwords").
    tg = instances(pg, ["--allow-plaintext-passwords", "false"])
    with psycopg.connect(tg.target().conninfo(user="analyst", sslmode="disable"), autocommit=True) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("select current_user").fetchone() == ("analyst",)
    token = token_for(tg)
    with tg.target().wire() as c:
        r = pgwire.login(c, "analyst", token)
        assert r.ok, f"plain token login from 127.0.0.1 with {mask(token)}: {r.error}"


def non_loopback_address() -> str | None:
    """An IPv4 address of this host outside 127/8 (connecting to it makes a non-loopback peer address)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    for a in out:
        if "." in a and not a.startswith("127."):
            try:
                with socket.socket() as s:
                    s.bind((a, 0))
            except OSError:
                continue
            return a
    return None


def test_plaintext_password_from_another_host(pg: PgCluster, pki, instances):
    # The refusal applies to non-loopback peers only, so it cannot be tested from 127.0.0.1 (that would need a
    # network namespace). Instead, when this host has a non-loopback address, tokengate listens there and the
    # client connects to it: the peer address is then that interface's address, not loopback. Skipped otherwise.
    addr = non_loopback_address()
    if addr is None:
        pytest.skip("no non-loopback IPv4 address on this host: plaintext refusal needs a non-loopback peer")
    tg = instances(pg, ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
                        "--allow-plaintext-passwords", "false"], host=addr)
    t = Target("proxy", addr, tg.port)
    with t.wire() as c:
        r = pgwire.login(c, "analyst", "analyst")
        assert r.error is not None, f"a plain password login from {addr} succeeded ({r.auth_requests})"
        assert r.error.severity == "FATAL" and r.error.sqlstate == "28000", r.error
        assert r.error.message == PLAINTEXT_MSG, r.error
        assert r.auth_requests == [], f"the password was asked for before refusing: {r.auth_requests}"
    # TLS from the same address works (the certificate has no SAN for it: sslmode=require, no verification).
    with psycopg.connect(t.conninfo(user="analyst", sslmode="require"), autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select current_user").fetchone() == ("analyst",)
    # With allow_plaintext_passwords = true the plain login is accepted.
    tg2 = instances(pg, ["--allow-plaintext-passwords", "true"], host=addr)
    with psycopg.connect(Target("proxy", addr, tg2.port).conninfo(user="analyst", sslmode="disable"),
                         autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
