# `tokengate tokens …` / `keys …` as a new user meets them: no command creates a store (a missing one is named,
# with where `./dev run` keeps its data), and `tokens create` checks the owner role upstream, or warns when it
# cannot reach it.
from __future__ import annotations

import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from conftest import (PgCluster, TokengateProcess, _cleanup_tmp, clean_env, remember_secret, tokengate_binary,
                      tokengate_cli)


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in clean_env(**env).items() if not k.startswith("TOKENGATE_") or k in env}
    return subprocess.run([str(tokengate_binary()), *args], capture_output=True, text=True, timeout=30, env=e)


def test_read_only_commands_never_create_a_store():
    d = Path(tempfile.mkdtemp(prefix="tg-nostore-"))
    try:
        for args in (["keys", "list"], ["tokens", "list"]):
            r = cli(*args, "--data-dir", str(d / "typo"))
            assert r.returncode == 1, r
            assert f"no token store in {d / 'typo'}" in r.stderr and ".dev/tokengate-data" in r.stderr, r.stderr
            assert r.stdout == ""
            assert not (d / "typo").exists(), f"`tokengate {' '.join(args)}` created a store"
        # The default data directory, relative to where the command runs, is not made either.
        r = subprocess.run([str(tokengate_binary()), "keys", "list"], capture_output=True, text=True, timeout=30,
                           cwd=d, env={k: v for k, v in clean_env().items() if not k.startswith("TOKENGATE_")})
        assert r.returncode == 1 and "no token store in ./tokengate-data" in r.stderr, r
        assert list(d.iterdir()) == []
    finally:
        _cleanup_tmp(d)


def test_create_checks_the_owner_upstream(tokengate: TokengateProcess, pg: PgCluster):
    name = f"cli_{uuid.uuid4().hex[:8]}"
    nobody = tokengate_cli(tokengate, "tokens", "create", name, "--user", "nobody_role")
    assert nobody.returncode == 1, nobody
    assert nobody.stdout == ""
    assert 'ERROR:  role "nobody_role" does not exist (SQLSTATE 42704)' in nobody.stderr, nobody.stderr

    made = tokengate_cli(tokengate, "tokens", "create", name, "--user", "analyst", "--duration", "1h")
    assert made.returncode == 0, made.stderr
    remember_secret(made.stdout.strip())
    assert "WARNING" not in made.stderr, made.stderr
    with tokengate.target().connect(user="analyst", password=made.stdout.strip()) as conn:
        assert conn.execute("select current_user").fetchone()[0] == "analyst"


def test_create_applies_the_policies_of_the_owners_roles(tokengate: TokengateProcess):
    """analyst's own policy is 1 day, service_accounts' 30 days: the longer wins, as for CREATE API TOKEN, because
    the command line now reads analyst's memberships upstream."""
    admin = tokengate.target().connect(user="admin")
    try:
        admin.execute("ALTER USER analyst SET API TOKEN MAX DURATION '1d'")
        admin.execute("ALTER ROLE service_accounts SET API TOKEN MAX DURATION '30d'")
        name = f"cli_{uuid.uuid4().hex[:8]}"
        r = tokengate_cli(tokengate, "tokens", "create", name, "--user", "analyst", "--duration", "20d")
        assert r.returncode == 0, r.stderr
        remember_secret(r.stdout.strip())
        too_long = tokengate_cli(tokengate, "tokens", "create", name + "x", "--user", "analyst", "--duration", "40d")
        assert too_long.returncode == 1
        assert 'set by the policy on role "service_accounts"' in too_long.stderr, too_long.stderr
        tokengate_cli(tokengate, "tokens", "revoke", name, "--user", "analyst")
    finally:
        admin.execute("ALTER USER analyst RESET API TOKEN MAX DURATION")
        admin.execute("ALTER ROLE service_accounts RESET API TOKEN MAX DURATION")
        admin.close()


def test_create_warns_when_the_upstream_cannot_be_reached(tokengate: TokengateProcess):
    name = f"cli_{uuid.uuid4().hex[:8]}"
    r = cli("tokens", "create", name, "--user", "nobody_role", "--duration", "1h", "--data-dir",
            str(tokengate.data_dir), "--upstream", "127.0.0.1:1")
    assert r.returncode == 0, r.stderr
    remember_secret(r.stdout.strip())
    assert 'WARNING:  cannot check role "nobody_role" on the upstream 127.0.0.1:1' in r.stderr, r.stderr
    tokengate_cli(tokengate, "tokens", "revoke", name, "--user", "nobody_role")
