# What happens to a token after login (issue 5): SHOW API TOKENS shows last_used_at (the store batches these writes
# every 5 s), and a live session ends when its token expires (FATAL 57P01; expiry_ends_sessions, on by default). The
# expiry-warning notice at login is tested in test_token_login.py. Tokens appear in messages only through mask().
from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

import pgwire
from conftest import PgCluster, Target, binary_has_flag, create_token, mask, tokengate_binary

BATCH_INTERVAL = 5.0  # seconds between the store's last_used_at writes


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def show_row(t: Target, user: str, name: str) -> dict:
    with t.connect(user=user) as conn:
        cur = conn.execute("SHOW API TOKENS")
        cols = [d.name for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    mine = [r for r in rows if r["name"] == name]
    assert len(mine) == 1, f"SHOW API TOKENS has {len(mine)} rows named {name}: {rows}"
    return mine[0]


def test_last_used_at_after_a_token_login(proxy: Target, mint_token):
    name, token, _ = mint_token(user="analyst", name=uniq("used"), duration="1h")
    row = show_row(proxy, "analyst", name)
    assert "last_used_at" in row, f"SHOW API TOKENS has no last_used_at column: {list(row)}"
    assert row["last_used_at"] is None, f"last_used_at set before any use: {row['last_used_at']}"

    before = dt.datetime.now(dt.timezone.utc)
    with proxy.connect(user="analyst", password=token) as conn:
        assert conn.execute("select current_user").fetchone() == ("analyst",)
    # Poll: the write is batched (every 5 s), so it may take up to one interval and a bit.
    deadline = time.monotonic() + BATCH_INTERVAL + 2
    while True:
        row = show_row(proxy, "analyst", name)
        if row["last_used_at"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    used = row["last_used_at"]
    assert used is not None, f"last_used_at still NULL {BATCH_INTERVAL + 2:.0f} s after a login with {mask(token)}"
    after = dt.datetime.now(dt.timezone.utc)
    assert before - dt.timedelta(seconds=2) <= used <= after + dt.timedelta(seconds=2), \
        f"last_used_at {used} is not between {before} and {after}"


def _token_login(t: Target, user: str, token: str) -> pgwire.WireConnection:
    c = t.wire()
    r = pgwire.login(c, user, token)
    if not r.ok:
        c.close()
        raise AssertionError(f"token login of {user} with {mask(token)} failed: {r.error}")
    return c


def test_expiry_ends_sessions_by_default(proxy: Target):
    """A session must not outlive its token: the session tokengate runs with the default settings."""
    t = proxy
    _, long_token, _ = create_token(t, user="analyst", name=uniq("long"), duration="1h")
    _, token, expires_at = create_token(t, user="analyst", name=uniq("brief"), duration="2s")
    victim = _token_login(t, "analyst", token)
    bystander = _token_login(t, "analyst", long_token)
    try:
        assert pgwire.data_rows_text(victim.simple_query("select 1")) == [("1",)]
        # Wait, sending nothing, for the unsolicited FATAL.
        wait = max(0.0, expires_at.timestamp() - time.time()) + 5
        msgs, closed = victim.read_until_closed(timeout=wait)
        ended_at = time.time()
        errs = [m.error() for m in msgs if m.tag == b"E"]
        assert errs, f"the session of an expired token was not ended within 5 s of {expires_at}: {msgs}"
        err = errs[0]
        assert err.severity == "FATAL" and err.sqlstate == "57P01", err
        assert "API token expired" in (err.message or ""), err
        late = ended_at - expires_at.timestamp()
        assert late <= 3.0, f"ended {late:.2f} s after expiry (wanted within ~3 s)"
        assert late >= -0.5, f"ended {-late:.2f} s BEFORE the token expired"
        assert closed, "connection not closed after the FATAL error"
        # A session with a token that has not expired goes on.
        assert pgwire.data_rows_text(bystander.simple_query("select 2")) == [("2",)]
    finally:
        victim.close()
        bystander.close()


def test_expired_token_session_goes_on_when_set_off(spawn_tokengate, pg: PgCluster):
    # expiry_ends_sessions = false: the session outlives its token, as PostgreSQL lets a session outlive VALID UNTIL;
    # new logins fail.
    binary = tokengate_binary()
    if not binary_has_flag(binary, "--expiry-ends-sessions"):
        pytest.skip("this tokengate binary has no --expiry-ends-sessions")
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                         extra_args=["--upstream-auth", "trust", "--max-failed-logins", "100000",
                                     "--expiry-ends-sessions", "false"])
    t = tg.target()
    _, token, expires_at = create_token(t, user="analyst", name=uniq("outlive"), duration="2s")
    c = _token_login(t, "analyst", token)
    try:
        time.sleep(max(0.0, expires_at.timestamp() - time.time()) + 2.5)
        assert pgwire.data_rows_text(c.simple_query("select 1")) == [("1",)], \
            "a token session ended at expiry although expiry_ends_sessions is off"
    finally:
        c.close()
    with t.wire() as w:
        r = pgwire.login(w, "analyst", token)
        assert r.error is not None and r.error.sqlstate == "28P01", r.error
