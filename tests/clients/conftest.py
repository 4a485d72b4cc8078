# Client tests (issue 6) reuse the integration fixtures of tests/integration/conftest.py: `pg`, `tokengate`,
# `proxy`, `direct`, `mint_token`, `create_token`, `mask`, `clean_env`, ...
#
# How the two folders share one cluster and one tokengate when `./dev test` runs both in one pytest:
#   * pytest imports every conftest.py outside a package as the module "conftest" and, before importing the next
#     one, drops the previous from sys.modules. So when tests/integration and tests/clients are both collected,
#     this file becomes sys.modules["conftest"], and the integration test modules' `from conftest import X` reach
#     this file. It therefore re-exports every name of the integration conftest, the same objects (the same
#     SECRETS list for the log scan, the same _Session, the same _cleanups).
#   * The integration conftest instance that pytest loaded is found among live modules; if tests/integration is
#     not part of this run, it is loaded here under another module name and its hooks are registered from here.
#   * Session fixtures `pg` and `tokengate`: if the integration ones are already up (tests/integration ran
#     first, as in ./dev test), they are shared; otherwise the integration fixture bodies start our own.
from __future__ import annotations

import gc
import importlib.util
import sys
import types
from pathlib import Path

import pytest

_INTEGRATION_DIR = Path(__file__).resolve().parents[1] / "integration"
_INTEGRATION_CONFTEST = _INTEGRATION_DIR / "conftest.py"
if str(_INTEGRATION_DIR) not in sys.path:
    sys.path.insert(0, str(_INTEGRATION_DIR))  # pgwire, jdbc


def _loaded_by_pytest() -> types.ModuleType | None:
    for obj in gc.get_objects():
        if isinstance(obj, types.ModuleType) and obj is not sys.modules.get(__name__):
            f = getattr(obj, "__file__", None)
            if f and Path(f).resolve() == _INTEGRATION_CONFTEST and obj.__name__ == "conftest":
                return obj
    return None


_IC = _loaded_by_pytest()
_OWN_COPY = _IC is None
if _IC is None:
    _spec = importlib.util.spec_from_file_location("tokengate_integration_conftest", _INTEGRATION_CONFTEST)
    _IC = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _IC
    _spec.loader.exec_module(_IC)

# Every name of the integration conftest (its hooks only when pytest does not already run them from there).
for _name, _value in vars(_IC).items():
    if _name.startswith("__") or (_name.startswith("pytest_") and not _OWN_COPY):
        continue
    globals()[_name] = _value

IC = _IC  # the integration conftest module: IC._Session, IC.SECRETS


def _fixture_body(fixture):
    """The plain function behind a @pytest.fixture (pytest 7 keeps it in __pytest_wrapped__)."""
    wrapped = getattr(fixture, "__pytest_wrapped__", None)
    return wrapped.obj if wrapped is not None else fixture


def _alive_cluster():
    c = IC._Session.pg
    return c if c is not None and c.started and not c._stopped else None


@pytest.fixture(scope="session")
def pg():
    shared = _alive_cluster()
    if shared is not None:
        yield shared  # tests/integration's cluster: it stops it
        return
    yield from _fixture_body(IC.pg)()


@pytest.fixture(scope="session")
def tokengate(pg):
    shared = IC._Session.tokengate
    if shared is not None and shared.alive() and shared.upstream[1] == pg.port:
        yield shared
        return
    yield from _fixture_body(IC.tokengate)(pg)


def token_masked(text: str, *tokens: str) -> str:
    """`text` with every token replaced by mask(token): for assertion messages and printed output."""
    for t in tokens:
        if t:
            text = text.replace(t, IC.mask(t))
    return text


def wait_for_active_query(pg, query: str, timeout: float = 15.0) -> None:
    """Wait until the upstream runs `query` (pg_stat_activity, state active): a cancel sent earlier would find
    nothing to cancel and the test would wait for the whole statement."""
    import time
    deadline = time.monotonic() + timeout
    with pg.admin_conn() as c:
        while time.monotonic() < deadline:
            n = c.execute("select count(*) from pg_stat_activity where state = 'active' and query = %s",
                          (query,)).fetchone()[0]
            if n:
                return
            time.sleep(0.05)
    raise AssertionError(f"{query!r} did not start within {timeout} s")
