# Revocation on a full disk (issue 9): tokengate's data directory (token store and audit log) lives on a small
# tmpfs that is then filled up. DROP API TOKEN and DROP ALL API TOKENS must still work and end the sessions,
# other writes fail with 58030 and say why, audit lines that do not fit are reported (never torn), and all of it
# recovers when space comes back. Needs permission to mount (root, as the test machines run); skipped with the
# reason otherwise. Tokens appear in messages only through mask().
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest

import pgwire
from conftest import PgCluster, Target, create_token, mask

FS_BYTES = 48 << 20  # room for the store's 8 MiB reserve, its map pages and the filler's slack


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def small_fs():
    """A tmpfs of FS_BYTES on a fresh directory, unmounted afterwards."""
    where = Path(tempfile.mkdtemp(prefix="tg-full-disk-"))
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES},mode=0700", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({(p.stderr or p.stdout).strip()}): the full-disk test needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        where.rmdir()


def fill(path: Path) -> None:
    """Writes `path` until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = b"f" * 65536
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError:
                break
        # The last few KiB in smaller writes, so that nothing is left over.
        while True:
            try:
                os.write(fd, b"f" * 512)
            except OSError:
                break
    finally:
        os.close(fd)


def test_revocation_works_on_a_full_disk(spawn_tokengate, pg: PgCluster, small_fs: Path):
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                         extra_args=["--upstream-auth", "trust", "--max-failed-logins", "100000"], start=False)
    tg.data_dir = small_fs / "tg-data"
    tg.audit_path = tg.data_dir / "audit.log"
    tg.start()
    t: Target = tg.target()

    victim_name, victim_token, _ = create_token(t, user="analyst", name=uniq("leaked"), duration="1h")
    # Enough tokens that revoking them all rewrites many pages of the store at once.
    with t.connect(user="analyst") as conn:
        for i in range(300):
            conn.execute(f"CREATE API TOKEN {uniq('bulk')} MAX DURATION '1h'")
    session = t.wire()
    try:
        r = pgwire.login(session, "analyst", victim_token)
        assert r.ok, f"login with {mask(victim_token)}: {r.error}"

        log_mark = tg.log_mark()
        fill(small_fs / "filler")

        with t.connect(user="analyst") as conn:
            # Creating is refused, with the reason.
            with pytest.raises(psycopg.Error) as e:
                conn.execute(f"CREATE API TOKEN {uniq('more')} MAX DURATION '1h'")
            assert e.value.sqlstate == "58030", f"{e.value.sqlstate} {e.value}"
            assert "disk holding the token store is full" in (e.value.diag.message_detail or ""), \
                e.value.diag.message_detail
            # Revoking is not.
            assert conn.execute(f"DROP API TOKEN {victim_name}").statusmessage == "DROP API TOKEN"
            assert conn.execute("DROP ALL API TOKENS").statusmessage == "DROP API TOKENS 300"

        # The leaked token's session ended, and the token no longer logs in.
        msgs, closed = session.read_until_closed(timeout=5)
        errs = [m.error() for m in msgs if m.tag == b"E"]
        assert errs and errs[0].sqlstate == "57P01" and "API token revoked" in (errs[0].message or ""), msgs
        with t.wire() as w:
            again = pgwire.login(w, "analyst", victim_token)
        assert again.error is not None and again.error.sqlstate == "28P01", again.error

        # Failed logins are audited, a line each: more than the audit file's last page still holds.
        for _ in range(40):
            with t.wire() as w:
                assert pgwire.login(w, "analyst", "not the password").error is not None
        # The audit log could not take these lines: the server log says so, the file holds no torn line.
        deadline = time.monotonic() + 5
        while "cannot write (No space left on device)" not in tg.log_since(log_mark) and time.monotonic() < deadline:
            time.sleep(0.1)
        log = tg.log_since(log_mark)
        assert "audit log" in log and "cannot write (No space left on device)" in log, log[-2000:]
        assert "only revocations are accepted" in log, log[-2000:]
        text = tg.audit_path.read_text()
        assert text.endswith("\n")
        for line in text.splitlines():
            json.loads(line)
    finally:
        session.close()

    # Space comes back: creating works again and audit lines are written again.
    (small_fs / "filler").unlink()
    _, fresh, _ = create_token(t, user="analyst", name=uniq("after"), duration="1h")
    with t.wire() as w:
        assert pgwire.login(w, "analyst", fresh).ok, f"login with {mask(fresh)}"
    deadline = time.monotonic() + 5
    while "writing again" not in tg.log_since(log_mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "writing again" in tg.log_since(log_mark)
    last = json.loads(tg.audit_path.read_text().splitlines()[-1])
    assert last["event"] == "login" and last["outcome"] == "ok", last
