# The Settings › API Tokens page (GET /) in a real browser: Debian's chromium driven by playwright-core
# (web_driver.py, browser/bridge.js). Each acceptance step of the page is taken as a person would take it, and
# checked against what tokengate really did (SHOW API TOKENS, psql logins); axe-core checks accessibility.
# Screenshots of every step go to build/test-results/web/ (the docs-*.png ones are those of docs/web.md).
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import requests

from conftest import REPO, create_token, mask, remember_secret
from web_driver import Browser, css, label, role, text, within

SHOTS = REPO / "build" / "test-results" / "web"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
       "require-trusted-types-for 'script'; trusted-types 'none'")
PHONE = (390, 844)  # CSS pixels of a common phone in portrait

HIDE = label("Hide expired and revoked")
NEW_TOKEN = role("button", "New token")
CREATE_DIALOG = role("dialog", "New API token")


@pytest.fixture(scope="module")
def browser():
    ui = Browser.start(SHOTS)
    try:
        yield ui
    finally:
        ui.quit()


@pytest.fixture
def ui(browser: Browser, tokengate, request):
    """A fresh chromium profile on the session tokengate's page; after the test, nothing the page did may have
    broken the CSP, thrown, or gone to another origin."""
    browser.launch(f"http://{tokengate.host}:{tokengate.http_port}")
    yield browser
    problems = browser.problems()
    browser.close()
    bad = [p for p in problems if not (p["kind"] == "console error" and re.fullmatch(
        r"Failed to load resource: the server responded with a status of (401|403|404|409|422) \(.*\)", p["text"]))]
    assert bad == [], f"{request.node.name}: the page broke a rule: {bad}"


def base_url(tokengate) -> str:
    return f"http://{tokengate.host}:{tokengate.http_port}"


def assert_accessible(ui: Browser, where: str) -> None:
    """axe-core (WCAG 2.1 A/AA and best practices): no serious or critical violation."""
    violations = ui.axe()
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert serious == [], f"axe-core on {where}: " + "\n".join(
        f"{v['impact']} {v['id']}: {v['help']} at {v['nodes']}" for v in serious)


def show_tokens(proxy, user: str) -> dict[str, dict]:
    """SHOW ALL API TOKENS FOR USER `user`, as the superuser admin: name -> row (the newest token of each name)."""
    with proxy.connect(user="admin") as conn:
        cur = conn.execute(f'SHOW ALL API TOKENS FOR USER "{user}"')
        cols = [d.name for d in cur.description]
        return {row[0]: dict(zip(cols, row)) for row in cur.fetchall()}


def log_in(ui: Browser, user: str, password: str) -> None:
    ui.goto("/")
    ui.wait(role("heading", "Log in to tokengate"))
    ui.fill(label("User name"), user)
    ui.fill(label("Password"), password)
    ui.click(role("button", "Log in"))
    ui.wait(role("heading", "API tokens"))
    assert ui.text(css("#who-user")) == user


def token_row(name: str) -> dict:
    return css(f'tr[data-token="{name}"]')


def assert_gone(ui: Browser, secret: str, when: str) -> None:
    """The token appears nowhere in the page: DOM, form values, storage, URL, title."""
    d = ui.dump()
    places = [k for k, v in d.items() if secret in (v if isinstance(v, str) else "\n".join(v))]
    assert places == [], f"{when}: the token {mask(secret)} is still in the page's {places}"


# ---- the page itself -----------------------------------------------------------------------------------------


def test_page_is_served_from_the_binary_with_a_strict_csp(tokengate):
    base = base_url(tokengate)
    r = requests.get(base + "/", timeout=10)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["Content-Security-Policy"] == CSP
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["X-Content-Type-Options"] == "nosniff"

    # Every file the page loads is served from /ui/, and none names another origin.
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert sorted(a for a in assets if a != "/" and a != "#main") == ["/ui/app.css", "/ui/app.js", "/ui/favicon.svg"]
    kinds = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
             "favicon.svg": "image/svg+xml"}
    for name, kind in kinds.items():
        a = requests.get(f"{base}/ui/{name}", timeout=10)
        assert a.status_code == 200 and a.headers["Content-Type"] == kind, (name, a.status_code)
        assert a.headers["Content-Security-Policy"] == CSP and a.headers["Cache-Control"] == "no-cache"
        external = set(re.findall(r"https?://[^\s\"')]+", a.text)) - {"http://www.w3.org/2000/svg"}
        assert external == set(), f"{name} names other origins: {external}"
        # Revalidation: the same ETag answers 304, without a body or a Content-Length of its own.
        again = requests.get(f"{base}/ui/{name}", headers={"If-None-Match": a.headers["ETag"]}, timeout=10)
        assert again.status_code == 304 and again.content == b"", (name, again.status_code)
        assert "Content-Length" not in again.headers and again.headers["ETag"] == a.headers["ETag"]
    assert set(re.findall(r"https?://[^\s\"'<>)]+", r.text)) == set()

    for path in ("/ui/index.html", "/ui/nothing.js", "/ui/..%2Fapp.js"):
        n = requests.get(base + path, timeout=10)
        assert n.status_code == 404 and n.json()["code"] == "08P01", (path, n.status_code, n.text[:200])
    assert requests.post(base + "/", timeout=10).status_code == 405


# ---- the acceptance steps ------------------------------------------------------------------------------------


def test_password_login_create_copy_use_comment_revoke_policy_logout(ui, proxy, fresh_role):
    user, password = fresh_role("LOGIN")

    # Log in with a password.
    ui.goto("/")
    ui.wait(role("heading", "Log in to tokengate"))
    assert_accessible(ui, "the login screen")
    ui.shot("01-login")
    ui.fill(label("User name"), user)
    ui.fill(label("Password"), password)
    ui.click(role("button", "Log in"))
    ui.wait(role("heading", "API tokens"))
    assert ui.text(css("#who-user")) == user
    assert ui.count(label("Tokens of")) == 0, "a non-administrator got a user picker"
    empty = ui.text(css("#empty-state"))
    assert "no API tokens yet" in empty and "password" in empty, empty
    assert_accessible(ui, "the empty list")
    ui.shot("02-empty-list")

    # Create a token with a name, a 7-day expiry and a comment.
    ui.click(NEW_TOKEN)
    ui.wait(CREATE_DIALOG)
    ui.fill(label("Name (optional)"), "ci_deploy")
    ui.check(label("in 7 days"))
    ui.fill(label("Comment (optional)"), "deploys from CI")
    assert_accessible(ui, "the create dialog")
    ui.shot("03-create")
    ui.click(role("button", "Create token"))
    ui.wait(role("heading", "Token ci_deploy created"))
    value = remember_secret(ui.value(label("Token")))
    assert value.startswith("eyJ") and value.count(".") == 2, mask(value)
    assert "it will not be shown again" in ui.text(css("#created-warning"))

    # Copy puts it on the clipboard, and says so.
    ui.click(role("button", "Copy"))
    assert ui.wait_text(css("#copy-status"), "Copied to the clipboard.")
    copied = remember_secret(ui.clipboard())
    assert copied == value, f"clipboard {mask(copied)} != shown {mask(value)}"
    assert_accessible(ui, "the new token")
    ui.shot("04-created", mask=[label("Token")])

    # The copied value logs in with psql.
    r = proxy.psql("-Atc", "select current_user", user=user, password=copied)
    assert r.rc == 0 and r.stdout.strip() == user, (r.rc, r.stderr[-500:])

    stored = show_tokens(proxy, user)["ci_deploy"]
    assert (stored["status"], stored["comment"], stored["created_by"]) == ("active", "deploys from CI", user)
    assert abs((stored["expires_at"] - stored["created_at"]) - dt.timedelta(days=7)) < dt.timedelta(seconds=2)

    # Shown once: gone when the dialog closes, and after a reload.
    ui.click(role("button", "Done"))
    ui.wait(CREATE_DIALOG, state="hidden")
    assert_gone(ui, value, "after Done")
    ui.reload()
    ui.wait(token_row("ci_deploy"))
    assert_gone(ui, value, "after a reload")
    row = ui.text(token_row("ci_deploy"))
    for part in ("ci_deploy", "in 7 days", "active", "deploys from CI", user):
        assert part in row, f"{part!r} missing from the row: {row!r}"
    assert_accessible(ui, "the list")
    ui.shot("05-list")

    # Edit the comment in place.
    ui.click(role("button", "Edit comment of ci_deploy"))
    ui.fill(label("Comment of ci_deploy"), "moved to db-3")
    ui.press("Enter", label("Comment of ci_deploy"))
    ui.wait_text(token_row("ci_deploy"), "moved to db-3")
    assert show_tokens(proxy, user)["ci_deploy"]["comment"] == "moved to db-3"
    ui.shot("06-comment-edited")

    # Revoke, after a confirmation that names the token; the switch (on by default) then hides it.
    assert ui.checked(HIDE)
    ui.click(role("button", "Revoke ci_deploy"))
    ui.wait(role("alertdialog", "Revoke token ci_deploy?"))
    assert_accessible(ui, "the revoke confirmation")
    ui.shot("07-revoke-confirm")
    ui.click(role("button", "Revoke ci_deploy", within=role("alertdialog")))
    ui.wait(token_row("ci_deploy"), state="detached")
    assert "1 expired or revoked token is hidden" in ui.text(css("#empty-state"))
    assert show_tokens(proxy, user)["ci_deploy"]["status"] == "revoked"
    r = proxy.psql("-Atc", "select 1", user=user, password=copied)
    assert r.rc != 0 and "password authentication failed" in r.stderr, (r.rc, r.stderr[-500:])
    ui.shot("08-revoked-hidden")

    # The switch shows it again, and is remembered across reloads either way.
    ui.uncheck(HIDE)
    assert "revoked" in ui.text(token_row("ci_deploy"))
    ui.reload()
    ui.wait(token_row("ci_deploy"))
    assert not ui.checked(HIDE)
    ui.shot("09-revoked-shown")
    ui.check(HIDE)
    ui.reload()
    ui.wait(css("#empty-state"))
    assert ui.checked(HIDE) and ui.count(token_row("ci_deploy")) == 0

    # A policy's refusal is shown by the expiry field, in tokengate's words.
    with proxy.connect(user="admin") as conn:
        conn.execute(f"ALTER USER {user} SET API TOKEN MAX DURATION '1d'")
    ui.click(NEW_TOKEN)
    ui.fill(label("Name (optional)"), "too_long")
    ui.check(label("in 30 days"))
    ui.click(role("button", "Create token"))
    error = ui.wait_text(css("#create-expiry-error"), "exceeds the maximum")
    assert error == (f'MAX DURATION 30d exceeds the maximum for user "{user}" The maximum API token duration for '
                     f'user "{user}" is 1d, set by the policy on role "{user}".'), error
    assert ui.attr(css("#create-expiry"), "aria-invalid") == "true"
    assert "create-expiry-error" in ui.attr(css("#create-expiry"), "aria-describedby")
    assert not ui.visible(css("#create-error"))
    assert_accessible(ui, "the policy refusal")
    ui.shot("10-policy-refusal")
    assert "too_long" not in show_tokens(proxy, user)
    ui.click(role("button", "Cancel"))

    # Log out: the browser session's token is revoked, and the page asks for a login again.
    sessions = [n for n, t in show_tokens(proxy, user).items() if n.startswith("web_session_") and t["status"] == "active"]
    assert len(sessions) == 1, sessions
    ui.click(role("button", "Log out"))
    ui.wait(role("heading", "Log in to tokengate"))
    assert "You have logged out." in ui.text(css("#login-error"))
    ui.shot("11-logged-out")
    assert show_tokens(proxy, user)[sessions[0]]["status"] == "revoked"
    ui.reload()
    ui.wait(role("heading", "Log in to tokengate"))


def test_administrator_picks_a_user_and_others_have_no_picker(ui, proxy, fresh_role):
    user, password = fresh_role("LOGIN")
    with proxy.connect(user="admin") as conn:
        conn.execute(f"CREATE API TOKEN report_bot FOR USER {user} MAX DURATION '90d' COMMENT 'nightly report'")

    log_in(ui, "admin", "admin")
    assert ui.text(css("#who-role")) == "administrator"
    picker = label("Tokens of")
    # The picker appears first and gets its options once /api/users answers.
    ui.wait(css(f'#user-picker option[value="{user}"]'), state="attached")
    options = ui.text(picker).splitlines()
    assert "admin (you)" in options and user in options and "nologin_role" not in options, options
    ui.select(picker, user)
    ui.wait(token_row("report_bot"))
    assert ui.url().endswith(f"/?user={user}")
    row = ui.text(token_row("report_bot"))
    assert "nightly report" in row and "admin" in row and "in 90 days" in row, row
    assert_accessible(ui, "the administrator's view of another user")
    ui.shot("12-admin-picker")

    # Creating from there creates for that user, as CREATE API TOKEN … FOR USER does.
    ui.click(NEW_TOKEN)
    assert ui.text(css("#create-for")) == f"For user {user}."
    ui.fill(label("Name (optional)"), "made_by_admin")
    ui.click(role("button", "Create token"))
    ui.wait(role("heading", "Token made_by_admin created"))
    remember_secret(ui.value(label("Token")))
    ui.press("Escape")
    ui.wait(CREATE_DIALOG, state="hidden")
    made = show_tokens(proxy, user)["made_by_admin"]
    assert (made["user"], made["created_by"], made["status"]) == (user, "admin", "active")

    # The choice is in the address: a reload shows the same user.
    ui.reload()
    ui.wait(token_row("made_by_admin"))
    assert ui.value(picker) == user

    ui.click(role("button", "Log out"))
    ui.wait(role("heading", "Log in to tokengate"))

    # A non-administrator has no picker, and ?user= in the address does not change whose tokens are shown.
    ui.goto("/?user=admin")
    ui.fill(label("User name"), user)
    ui.fill(label("Password"), password)
    ui.click(role("button", "Log in"))
    ui.wait(token_row("report_bot"))
    assert ui.count(picker) == 0
    assert ui.url().endswith("/"), ui.url()
    ui.shot("13-no-picker")


def test_token_login_cannot_create_and_errors_are_words(ui, pg, fresh_role, spawn_tokengate):
    user, password = fresh_role("LOGIN")
    # tokengate as configured by default: token sessions cannot create tokens (the session instance allows it).
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port), extra_args=["--upstream-auth", "trust"])
    proxy = tg.target()
    ui.launch(base_url(tg))

    # A wrong password: tokengate's words, by the form.
    ui.goto("/")
    ui.fill(label("User name"), user)
    ui.fill(label("Password"), "not the password")
    ui.click(role("button", "Log in"))
    assert ui.wait_text(css("#login-error"), f'password authentication failed for user "{user}"')
    ui.shot("14-login-refused")

    # Logged in with a token: no creating, and the page says why.
    _, token, _ = create_token(proxy, user=user, password=password, name="for_browser", duration="1h")
    ui.check(label("an API token"))
    ui.fill(label("API token"), token)
    ui.click(role("button", "Log in"))
    ui.wait(token_row("for_browser"))
    assert not ui.visible(NEW_TOKEN)
    note = ui.text(css("#create-note"))
    assert "logged in with an API token" in note and "log in with your password" in note, note
    assert "this browser" in ui.text(token_row("for_browser"))
    assert_gone(ui, token, "after a token login")
    ui.shot("15-token-login")

    # The session ends under the page's feet (the token is revoked elsewhere): the next request says so.
    with proxy.connect(user="admin") as conn:
        conn.execute(f"DROP API TOKEN for_browser FOR USER {user}")
    ui.click(role("button", "Edit comment of for_browser"))
    ui.fill(label("Comment of for_browser"), "too late")
    ui.click(role("button", "Save"))
    ui.wait(role("heading", "Log in to tokengate"))
    said = ui.text(css("#login-error"))
    assert said.startswith("Your session has ended: password authentication failed") and "Log in again." in said, said


def test_keyboard_only(ui, proxy, fresh_role):
    user, password = fresh_role("LOGIN")
    ui.goto("/")
    ui.wait(role("heading", "Log in to tokengate"))
    assert ui.focused()["id"] == "login-user"
    ui.type(user)
    ui.press("Tab")
    ui.type(password)
    ui.press("Enter")
    ui.wait(role("heading", "API tokens"))

    def tab_to(describe, limit=40):
        """Tab forward until `describe(focused)` holds; every stop must show its focus."""
        for _ in range(limit):
            ui.press("Tab")
            f = ui.focused()
            assert f is not None, "focus left the page"
            if f["focus_visible"]:
                assert f["outline_style"] != "none" and f["outline_width"] != "0px", f"focus not drawn: {f}"
            if describe(f):
                return f
        raise AssertionError(f"{limit} Tabs did not reach the control")

    tab_to(lambda f: f["text"] == "New token")
    ui.press("Enter")
    ui.wait(CREATE_DIALOG)
    assert ui.focused()["id"] == "create-name"
    ui.type("kb_token")
    ui.press("Tab")  # the checked preset, 30 days
    assert ui.focused()["type"] == "radio"
    ui.press("ArrowLeft")  # 7 days
    assert ui.checked(label("in 7 days"))
    tab_to(lambda f: f["id"] == "create-comment")
    ui.type("typed only")
    tab_to(lambda f: f["text"] == "Create token")
    ui.shot("16-keyboard-focus")
    ui.press("Enter")
    ui.wait(role("heading", "Token kb_token created"))
    remember_secret(ui.value(label("Token")))
    tab_to(lambda f: f["text"] == "Copy")
    ui.press("Enter")
    ui.wait_text(css("#copy-status"), "Copied to the clipboard.")
    ui.press("Escape")
    ui.wait(CREATE_DIALOG, state="hidden")
    assert ui.focused()["text"] == "New token", "focus did not come back to the button that opened the dialog"
    made = show_tokens(proxy, user)["kb_token"]
    assert made["comment"] == "typed only"
    assert abs((made["expires_at"] - made["created_at"]) - dt.timedelta(days=7)) < dt.timedelta(seconds=2)

    tab_to(lambda f: f["aria_label"] == "Revoke kb_token")
    ui.press("Enter")
    ui.wait(role("alertdialog", "Revoke token kb_token?"))
    assert ui.focused()["text"] == "Cancel", "the safe choice must have the focus first"
    ui.press("Tab")
    assert ui.focused()["text"] == "Revoke kb_token"
    ui.press("Enter")
    ui.wait(token_row("kb_token"), state="detached")
    assert show_tokens(proxy, user)["kb_token"]["status"] == "revoked"


def test_screenshots_for_docs_at_desktop_and_phone_width(ui, pg, spawn_tokengate):
    """The pictures of docs/web.md: the list and the create dialog, 1280 px and 390 px wide. On a tokengate
    with a token store of its own, so that the pictures show `analyst` without touching the session's tokens."""
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port), extra_args=["--upstream-auth", "trust"])
    ui.launch(base_url(tg))
    user, password = "analyst", "analyst"
    with tg.target().connect(user=user, password=password) as conn:
        conn.execute("CREATE API TOKEN airflow_nightly MAX DURATION '90d' COMMENT 'Airflow on etl-2, nightly loads'")
        conn.execute("CREATE API TOKEN metabase MAX DURATION '365d' COMMENT 'dashboards'")
        conn.execute("CREATE API TOKEN old_laptop MAX DURATION '30d'")
        conn.execute("DROP API TOKEN old_laptop")

    for width, height, suffix in ((1280, 800, "desktop"), (*PHONE, "phone")):
        ui.viewport(width, height)
        log_in(ui, user, password)
        ui.uncheck(HIDE)
        ui.wait(token_row("old_laptop"))
        layout = ui.layout()
        assert layout["scroll_width"] <= layout["client_width"], f"{suffix}: the page scrolls sideways: {layout}"
        assert_accessible(ui, f"the list at {width} px")
        ui.shot(f"docs-list-{suffix}", full_page=suffix == "phone")
        ui.click(NEW_TOKEN)
        ui.fill(label("Name (optional)"), "ci_deploy")
        ui.check(label("in 30 days"))
        ui.fill(label("Comment (optional)"), "GitHub Actions, deploy job")
        assert_accessible(ui, f"the create dialog at {width} px")
        ui.shot(f"docs-create-{suffix}")
        ui.click(role("button", "Cancel"))
        ui.check(HIDE)
        ui.click(role("button", "Log out"))
        ui.wait(role("heading", "Log in to tokengate"))


def test_hostile_names_and_comments_stay_text(ui, proxy, fresh_role):
    """Names and comments are whatever a user typed in SQL: the page shows them as text (never markup), and
    acts on them through percent-encoded paths."""
    user, password = fresh_role("LOGIN")
    name = "ci/<b>bot</b> 1?x=%2F"
    comment = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
    with proxy.connect(user=user, password=password) as conn:
        conn.execute(f'CREATE API TOKEN "{name}" MAX DURATION \'1d\' COMMENT $${comment}$$')
    log_in(ui, user, password)
    row = token_row(name)
    ui.wait(row)
    shown = ui.text(row)
    assert name in shown and comment in shown, shown
    assert ui.count(css("#tokens-box img, #tokens-box script, #tokens-box b")) == 0
    assert ui.dump()["title"] == "API tokens · tokengate"

    ui.click(role("button", f"Edit comment of {name}"))
    ui.fill(label(f"Comment of {name}"), "<i>plain</i>")
    ui.click(role("button", "Save"))
    ui.wait_text(row, "<i>plain</i>")
    assert ui.count(css("#tokens-box i")) == 0
    assert show_tokens(proxy, user)[name]["comment"] == "<i>plain</i>"

    ui.click(role("button", f"Revoke {name}"))
    ui.wait(role("alertdialog", f"Revoke token {name}?"))
    ui.click(role("button", f"Revoke {name}", within=role("alertdialog")))
    ui.wait(row, state="detached")
    assert show_tokens(proxy, user)[name]["status"] == "revoked"
