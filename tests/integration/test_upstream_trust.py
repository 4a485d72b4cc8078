# Trusting the upstream (docs/security.md): tokengate answers only the authentication requests it expects
# (upstream.require_auth), and verifies a TCP upstream on another host by default (upstream.sslmode).
from __future__ import annotations

import tempfile
from pathlib import Path

import pgwire
from conftest import ROLES, PgCluster, Target, write_userlist


def password_mode_args(tmp: Path, *extra: str) -> list[str]:
    userlist = write_userlist(tmp / "userlist.txt", {u: pw for u, pw in ROLES.items() if u != "nologin_role"})
    return ["--upstream-auth", "password", "--userlist", str(userlist), "--control-user", "admin",
            "--max-failed-logins", "0", *extra]


def login(t: Target, user: str) -> pgwire.LoginResult:
    with t.wire() as w:
        r = pgwire.login(w, user, ROLES[user])
        if r.ok:
            w.send(pgwire.terminate_message())
        return r


def test_cleartext_and_md5_requests_are_not_answered_unless_expected(spawn_tokengate, pg: PgCluster):
    """By default (password mode: scram-sha-256 only) the cluster's cleartext request for plainuser and MD5 request
    for md5user get no answer: the password never leaves tokengate."""
    with tempfile.TemporaryDirectory() as tmp:
        tg = spawn_tokengate(upstream=(pg.host, pg.port), extra_args=password_mode_args(Path(tmp)))
        t = tg.target()
        assert login(t, "analyst").ok  # SCRAM is answered
        for user, what in (("plainuser", "a cleartext password"), ("md5user", "an MD5 password")):
            mark = pg.log_mark()
            r = login(t, user)
            assert r.error is not None, f"{user}: logged in although {what} was not expected"
            assert r.error.sqlstate == "28000", r.error
            assert r.error.message == (f"the upstream server asked for {what}, which tokengate does not answer "
                                       "(upstream.require_auth = scram-sha-256)"), r.error
            # Nothing was sent: PostgreSQL saw no password, right or wrong.
            assert "password authentication failed" not in pg.log_since(mark)
        expected = spawn_tokengate(upstream=(pg.host, pg.port),
                                   extra_args=password_mode_args(Path(tmp), "--upstream-require-auth",
                                                                 "scram-sha-256,md5,password"))
        for user in ("plainuser", "md5user", "analyst"):
            assert login(expected.target(), user).ok, user


def test_upstream_sslmode_default_depends_on_the_address(spawn_tokengate, pg: PgCluster):
    local = spawn_tokengate(upstream=(pg.host, pg.port), extra_args=["--upstream-auth", "trust"])
    assert "upstream.sslmode = prefer (the default for a local upstream)" in local.log_since(0)
    # 192.0.2.1 (TEST-NET-1) is another host: verified against the system's CAs. Nothing is connected at start.
    remote = spawn_tokengate(upstream=("192.0.2.1", 5432), extra_args=["--upstream-auth", "trust"])
    assert "upstream.sslmode = verify-full (the default for an upstream on another host)" in remote.log_since(0)
    explicit = spawn_tokengate(upstream=("192.0.2.1", 5432),
                               extra_args=["--upstream-auth", "trust", "--upstream-sslmode", "disable"])
    assert "the default for" not in explicit.log_since(0)
