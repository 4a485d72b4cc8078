"""The HTTP gateway under the wire listener's TLS settings: HTTPS and plain HTTP on one port (tls.mode allow), the
Secure cookie, tls.mode require, SIGHUP certificate reload, and credentials over plain HTTP from another host."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import tempfile
import time
from pathlib import Path

import pytest
import requests
import urllib3

from conftest import _cleanup_tmp, _cleanups, create_token, remember_secret
from http_client import HttpApi, describe
from test_http_gateway import assert_error
from test_tls import instances, non_loopback_address, pki, der  # noqa: F401 - fixtures and helpers


def https(tg, path: str, ca: Path, **kw) -> requests.Response:
    return requests.request(kw.pop("method", "GET"), f"https://localhost:{tg.http_port}{path}", verify=str(ca),
                            timeout=10, **kw)


def http_peer_cert(tg, ca: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", tg.http_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.getpeercert(binary_form=True)


def test_https_and_plain_on_one_port(pg, pki, instances):
    tg = instances(pg, ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)])
    token = create_token(tg.target(), user="analyst", duration="1h")[1]
    r = https(tg, "/api/me", pki.ca_cert, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["user"] == "analyst", describe(r)
    # Plain HTTP from loopback still works with tls.mode allow.
    api = HttpApi(f"http://127.0.0.1:{tg.http_port}")
    assert api.call("GET", "/api/me", token=token).status_code == 200
    # The cookie is Secure when the login came over TLS, and only then.
    r = https(tg, "/api/login", pki.ca_cert, method="POST", json={"user": "analyst", "password": "analyst"})
    assert r.status_code == 200, describe(r)
    assert r.headers["Set-Cookie"].endswith("; HttpOnly; SameSite=Strict; Secure"), "Secure missing under TLS"
    remember_secret(r.cookies["auth_token"])
    r = api.call("POST", "/api/login", json={"user": "analyst", "password": "analyst"})
    assert "Secure" not in r.headers["Set-Cookie"]
    remember_secret(r.cookies["auth_token"])
    # An unrelated CA is refused by the client, as for the wire.
    with pytest.raises(requests.exceptions.SSLError):
        https(tg, "/healthz", pki.other_ca_cert)


def test_tls_mode_require(pg, pki, instances):
    tg = instances(pg, ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-mode", "require"])
    api = HttpApi(f"http://127.0.0.1:{tg.http_port}")
    body = assert_error(api.call("GET", "/api/me", headers={"Authorization": "Bearer x"}), 403, "28000",
                        "tokengate requires an encrypted connection")
    assert body["hint"] == "Use https://."
    assert_error(api.call("POST", "/api/login", json={"user": "analyst", "password": "analyst"}), 403, "28000")
    # Health checks answer over plain HTTP.
    assert api.call("GET", "/healthz").status_code == 200
    assert https(tg, "/healthz", pki.ca_cert).status_code == 200
    r = https(tg, "/api/login", pki.ca_cert, method="POST", json={"user": "analyst", "password": "analyst"})
    assert r.status_code == 200, describe(r)
    remember_secret(r.cookies["auth_token"])


def test_tls_mode_disable_serves_plain_only(pg, pki, instances):
    tg = instances(pg, ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-mode", "disable"])
    assert HttpApi(f"http://127.0.0.1:{tg.http_port}").call("GET", "/healthz").status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        https(tg, "/healthz", pki.ca_cert)


def test_sighup_reloads_the_http_certificate(pg, pki, instances):
    d = Path(tempfile.mkdtemp(prefix="tg-http-reload-"))
    _cleanups.append(lambda: _cleanup_tmp(d))
    cert, key = d / "tls.crt", d / "tls.key"
    shutil.copy2(pki.server_cert, cert)
    shutil.copy2(pki.server_key, key)
    tg = instances(pg, ["--tls-cert", str(cert), "--tls-key", str(key)])
    assert http_peer_cert(tg, pki.ca_cert) == der(pki.server_cert)
    # A kept-alive HTTPS connection from before the reload.
    live = requests.Session()
    assert live.get(f"https://localhost:{tg.http_port}/healthz", verify=str(pki.ca_cert), timeout=10).ok
    new_cert, new_key = pki.issue_server("http-second", cn="localhost-http-second")
    shutil.copy2(new_cert, d / "tls.crt.new")
    shutil.copy2(new_key, d / "tls.key.new")
    os.replace(d / "tls.key.new", key)
    os.replace(d / "tls.crt.new", cert)
    tg.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while http_peer_cert(tg, pki.ca_cert) != der(new_cert) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert http_peer_cert(tg, pki.ca_cert) == der(new_cert), "new HTTPS connections still get the old certificate"
    assert live.get(f"https://localhost:{tg.http_port}/healthz", verify=str(pki.ca_cert), timeout=10).ok
    live.close()


def test_credentials_over_plain_http_from_another_host(pg, pki, instances):
    """As on the wire: plain HTTP from a non-loopback address may not carry credentials (health checks may)."""
    addr = non_loopback_address()
    if addr is None:
        pytest.skip("no non-loopback IPv4 address on this host: the refusal needs a non-loopback peer")
    tg = instances(pg, ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)], host=addr)
    api = HttpApi(f"http://{addr}:{tg.http_port}")
    body = assert_error(api.call("POST", "/api/login", json={"user": "analyst", "password": "analyst"}), 403,
                        "28000",
                        "tokengate does not accept credentials over an unencrypted connection from another host")
    assert "allow_plaintext_passwords" in body["hint"]
    assert_error(api.call("GET", "/api/me", headers={"Authorization": "Bearer x"}), 403, "28000")
    assert api.call("GET", "/healthz").status_code == 200
    # Over TLS from the same address it works (no certificate check: the certificate names localhost).
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    r = requests.post(f"https://{addr}:{tg.http_port}/api/login", json={"user": "analyst", "password": "analyst"},
                      verify=False, timeout=10)
    assert r.status_code == 200, describe(r)
    remember_secret(r.cookies["auth_token"])
    tg2 = instances(pg, ["--allow-plaintext-passwords", "true"], host=addr)
    r = HttpApi(f"http://{addr}:{tg2.http_port}").call("POST", "/api/login",
                                                       json={"user": "analyst", "password": "analyst"})
    assert r.status_code == 200, describe(r)
    remember_secret(r.cookies["auth_token"])
