# The .deb of `./dev package`: its metadata, an installation into a throwaway root with dpkg itself
# (maintainer scripts included), the unit checked by systemd-analyze, and the installed binary serving a
# throwaway PostgreSQL 15 cluster (no systemd: `tokengate serve` started here), announcing itself over
# $NOTIFY_SOCKET as a Type=notify unit expects.
#
#   TOKENGATE_DEB=/path/to.deb   test that package instead of building one with ./dev package
# Skipped when dpkg-deb is absent (not a Debian system).
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from conftest import PSQL, PgCluster, clean_env, free_port, tail  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")

# A package build reuses build/'s objects through ccache; on a cold cache it compiles everything.
PACKAGE_TIMEOUT = 1800


@pytest.fixture(scope="module")
def deb() -> Path:
    if os.environ.get("TOKENGATE_DEB"):
        return Path(os.environ["TOKENGATE_DEB"])
    p = subprocess.run([str(REPO / "dev"), "package"], capture_output=True, text=True, timeout=PACKAGE_TIMEOUT)
    assert p.returncode == 0, f"./dev package failed:\n{p.stderr[-4000:]}"
    path = Path(p.stdout.strip().splitlines()[-1])
    assert path.suffix == ".deb" and path.exists(), p.stdout
    return path


@pytest.fixture(scope="module")
def root(deb: Path) -> Path:
    """A throwaway root with an empty dpkg database and a passwd of its own, the .deb installed by dpkg
    --root with chrootless maintainer scripts (they see the root in $DPKG_ROOT)."""
    r = Path(tempfile.mkdtemp(prefix="tg-debroot-"))
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc", "var/lib", "usr/sbin"):
        (r / d).mkdir(parents=True, exist_ok=True)
    (r / "var/lib/dpkg/status").write_text("")
    (r / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (r / "etc/group").write_text("root:x:0:\n")
    (r / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (r / "etc/gshadow").write_text("root:*::\n")
    # Debian's dpkg wants these on the PATH of maintainer scripts; they are the host's.
    p = subprocess.run(["dpkg", f"--root={r}", "--force-script-chrootless", "--force-depends", "--log=/dev/null",
                        "-i", str(deb)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"dpkg -i failed:\n{p.stdout}\n{p.stderr}"
    yield r
    shutil.rmtree(r, ignore_errors=True)


def test_metadata(deb: Path) -> None:
    fields = {}
    for name in ("Package", "Version", "Architecture", "Depends"):
        fields[name] = subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                                      check=True).stdout.strip()
    assert fields["Package"] == "tokengate"
    assert fields["Architecture"] == subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                                                    text=True).stdout.strip()
    # Computed by dpkg-shlibdeps from the binary's NEEDED entries.
    for lib in ("libc6", "libssl3", "libpq5", "liblmdb0", "libbotan-2-19", "libsystemd0"):
        assert re.search(rf"\b{re.escape(lib)}\b", fields["Depends"]), fields["Depends"]
    conffiles = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True).stdout
    assert b"conffiles" in conffiles
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    for path in ("./usr/bin/tokengate", "./lib/systemd/system/tokengate.service", "./etc/tokengate/tokengate.toml"):
        assert path in listing, listing


def test_installed_files_user_and_state_dir(root: Path) -> None:
    conffiles = (root / "var/lib/dpkg/info/tokengate.conffiles").read_text().split()
    assert conffiles == ["/etc/tokengate/tokengate.toml"]
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    assert "tokengate" in users, "postinst did not create the tokengate user"
    uid, gid, home, shell = int(users["tokengate"][2]), int(users["tokengate"][3]), users["tokengate"][5], \
        users["tokengate"][6]
    assert uid < 1000 and home == "/var/lib/tokengate" and shell == "/usr/sbin/nologin", users["tokengate"]
    st = (root / "var/lib/tokengate").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, 0o700)
    conf = (root / "etc/tokengate/tokengate.toml").stat()
    assert (conf.st_uid, conf.st_gid, stat.S_IMODE(conf.st_mode)) == (0, gid, 0o640)
    binary = root / "usr/bin/tokengate"
    assert os.access(binary, os.X_OK)
    out = subprocess.run(["file", "-b", str(binary)], capture_output=True, text=True).stdout \
        if shutil.which("file") else "stripped"
    assert "not stripped" not in out


def test_unit(root: Path) -> None:
    unit = (root / "lib/systemd/system/tokengate.service").read_text()
    for line in ("Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "StateDirectory=tokengate", "CapabilityBoundingSet=\n", "User=tokengate",
                 "ExecReload=/bin/kill -HUP $MAINPID",
                 "ExecStart=/usr/bin/tokengate serve --config /etc/tokengate/tokengate.toml"):
        assert line in unit, f"{line!r} missing from the unit"
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # --root: ExecStart's binary is looked for in the throwaway root, which gets this host's targets (the
    # unit's default dependencies) and /bin/kill (ExecReload) for the check.
    for target in Path("/lib/systemd/system").glob("*.target"):
        if not (root / "lib/systemd/system" / target.name).exists():
            shutil.copy(target, root / "lib/systemd/system" / target.name)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy("/bin/kill", root / "bin/kill")
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}",
                        str(root / "lib/systemd/system/tokengate.service")],
                       capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (p.stdout + p.stderr).splitlines() if "tokengate.service" in ln]
    assert p.returncode == 0 and not problems, p.stdout + p.stderr


def test_version(root: Path) -> None:
    out = subprocess.run([str(root / "usr/bin/tokengate"), "version"], capture_output=True, text=True,
                         check=True).stdout
    assert re.match(r"tokengate \d+\.\d+\.\d+ \(commit [0-9a-f]{7,}(-dirty)?\)\n", out), out
    for lib in ("OpenSSL", "Botan", "LMDB", "libpq", "Boost", "libpg_query"):
        assert re.search(rf"^  {lib}: \S", out, re.M), out
    assert "systemd notify: libsystemd" in out, out


def _notifications(sock: socket.socket, want: str, timeout: float = 10) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except socket.timeout:
            break
        if want in got[-1]:
            return got
    raise AssertionError(f"no {want!r} from sd_notify; got {got}")


def test_installed_binary_serves_and_notifies(root: Path) -> None:
    """The installed binary with the installed configuration (flags override where this host differs) in
    front of a throwaway cluster: psql gets an answer; READY=1 comes once it listens, RELOADING=1 and
    READY=1 around SIGHUP, STOPPING=1 at SIGTERM."""
    pg = PgCluster()
    tmp = Path(tempfile.mkdtemp(prefix="tg-deb-"))
    proc = None
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        pg.start()
        notify.bind(str(tmp / "notify"))
        port = free_port()
        log = open(tmp / "tokengate.log", "wb")
        env = clean_env(NOTIFY_SOCKET=str(tmp / "notify"))
        proc = subprocess.Popen(
            [str(root / "usr/bin/tokengate"), "serve", "--config", str(root / "etc/tokengate/tokengate.toml"),
             "--listen", f"127.0.0.1:{port}", "--upstream", f"{pg.socket_dir}:{pg.port}",
             "--data-dir", str(tmp / "data"), "--http-listen", "off"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        _notifications(notify, "READY=1")
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # READY=1 came after listen()
        p = subprocess.run([PSQL, "-XAtq", "-h", "127.0.0.1", "-p", str(port), "-U", "admin", "-d", "postgres",
                            "-c", "SELECT 'answer from ' || current_user"],
                           capture_output=True, text=True, timeout=30, env=clean_env(PGPASSWORD="admin"))
        assert p.returncode == 0 and p.stdout.strip() == "answer from admin", \
            f"{p.stdout}{p.stderr}\n{tail(tmp / 'tokengate.log')}"
        proc.send_signal(signal.SIGHUP)
        got = _notifications(notify, "READY=1")
        assert "RELOADING=1" in "".join(got), got
        proc.send_signal(signal.SIGTERM)
        _notifications(notify, "STOPPING=1")
        assert proc.wait(20) == 0, tail(tmp / "tokengate.log")
    finally:
        notify.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_remove_keeps_configuration_purge_removes_it(root: Path, deb: Path) -> None:
    def dpkg(*args: str) -> None:
        p = subprocess.run(["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends",
                            "--log=/dev/null", *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, f"dpkg {args}: {p.stdout}{p.stderr}"

    dpkg("-r", "tokengate")
    assert not (root / "usr/bin/tokengate").exists()
    assert (root / "etc/tokengate/tokengate.toml").exists(), "remove must keep the conffile"
    assert (root / "var/lib/tokengate").is_dir(), "remove must keep the token store"
    dpkg("--purge", "tokengate")
    assert not (root / "etc/tokengate/tokengate.toml").exists()
    assert (root / "var/lib/tokengate").is_dir(), "purge keeps the signing keys and tokens (postrm says why)"
    dpkg("-i", str(deb))  # and it installs again, the user already there
    assert (root / "usr/bin/tokengate").exists()
