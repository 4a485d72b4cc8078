# A slow disk under the token store stalls only the statement waiting for it, never the other sessions of its thread.
#
# tokengate runs with one I/O thread over a real LMDB store whose fsyncs take 2 s (build/tests/slow_sync.so, an
# LD_PRELOAD shim that delays fsync/fdatasync/msync of files under the data directory while a switch file exists).
# A CREATE API TOKEN then waits for the disk on the store worker; a query of another session on the same thread is
# answered meanwhile in milliseconds, as it would be without the CREATE.
from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import PgCluster, tokengate_binary

SLOW_SYNC_MS = 2000


def slow_sync_shim() -> Path:
    shim = tokengate_binary().parent / "tests" / "slow_sync.so"
    if not shim.exists():
        pytest.fail(f"{shim} is missing: build the tree (ninja -C build) first", pytrace=False)
    return shim


def test_create_api_token_on_a_slow_disk_does_not_stall_other_sessions(
        spawn_tokengate, pg: PgCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    switch = tmp_path / "slow-disk-on"
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port), extra_args=["--threads", "1"], start=False)
    # Only the tokengate process gets the shim (launch() copies the environment); the test's own clients do not.
    monkeypatch.setenv("LD_PRELOAD", str(slow_sync_shim()))
    monkeypatch.setenv("TG_SLOW_SYNC_DIR", str(tg.data_dir))
    monkeypatch.setenv("TG_SLOW_SYNC_SWITCH", str(switch))
    monkeypatch.setenv("TG_SLOW_SYNC_MS", str(SLOW_SYNC_MS))
    tg.start()
    for name in ("LD_PRELOAD", "TG_SLOW_SYNC_DIR", "TG_SLOW_SYNC_SWITCH", "TG_SLOW_SYNC_MS"):
        monkeypatch.delenv(name)
    t = tg.target()

    with psycopg.connect(t.conninfo(user="admin"), autocommit=True) as creator, \
            psycopg.connect(t.conninfo(user="analyst"), autocommit=True) as other:
        # Both sessions are warm (role facts cached, statements planned) before the disk turns slow.
        other.execute("select 1").fetchone()
        switch.touch()

        created: dict[str, object] = {}

        def create() -> None:
            started = time.monotonic()
            try:
                row = creator.execute(f"CREATE API TOKEN slow_{uuid.uuid4().hex[:8]} MAX DURATION '1h'").fetchone()
                created["row"] = row
            except Exception as e:  # reported below, in the test's thread
                created["error"] = e
            created["seconds"] = time.monotonic() - started

        worker = threading.Thread(target=create)
        worker.start()
        time.sleep(0.3)  # the CREATE is now waiting for its fsync
        latencies = []
        for _ in range(10):
            started = time.monotonic()
            assert other.execute("select 1").fetchone() == (1,)
            latencies.append(time.monotonic() - started)
        still_creating = worker.is_alive()
        worker.join(30)
        switch.unlink()

    assert "error" not in created, created.get("error")
    assert created.get("row") is not None
    # The disk really was slow: otherwise this test would show nothing.
    assert created["seconds"] >= SLOW_SYNC_MS / 1000 * 0.9, f"CREATE took only {created['seconds']:.3f} s"
    assert still_creating, "the queries ran after the CREATE, not while it waited for the disk"
    # Without the store worker each select would wait for the fsync (2 s). Half a second leaves room for a busy
    # test machine.
    assert max(latencies) < 0.5, f"select 1 took {max(latencies) * 1000:.0f} ms while a CREATE waited for the disk"
