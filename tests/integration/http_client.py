"""A small HTTP client for the gateway tests: requests for ordinary calls, raw sockets for what requests hides
(oversized headers, slow bodies, exact bytes on the wire).

HttpApi(base).call(method, path, token=..., cookie=..., json=..., headers=...) -> requests.Response
  token: a Bearer token, or a WebSession (a browser login's cookie: sent as the cookie, with the CSRF header)
HttpApi(base).login(user, password) -> WebSession
raw_request(host, port, data) -> (status, headers, body) of the first answer, read until the server closes or
Content-Length is satisfied.
"""
from __future__ import annotations

import json as jsonlib
import socket
from dataclasses import dataclass
from typing import Any

import requests

CSRF_HEADER = "X-Tokengate-CSRF"


@dataclass
class WebSession:
    """The auth_token cookie of a password login (POST /api/login): what a browser holds."""

    cookie: str
    name: str  # the web session's token name

    def __repr__(self) -> str:  # never the cookie's token
        return f"WebSession({self.name})"


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names; the last of repeated headers
    body: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.body)


class HttpApi:
    """Calls one tokengate's HTTP gateway. Tokens passed in never appear in assertion messages: callers compare
    statuses and JSON fields, never whole requests."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.session = requests.Session()

    def call(self, method: str, path: str, token: str | None = None, cookie: str | None = None,
             json: Any = None, headers: dict[str, str] | None = None, data: bytes | str | None = None,
             timeout: float = 30) -> requests.Response:
        h = dict(headers or {})
        if isinstance(token, WebSession):
            cookie = token.cookie
            h.setdefault(CSRF_HEADER, "1")
        elif token is not None:
            h["Authorization"] = f"Bearer {token}"
        if cookie is not None:
            h["Cookie"] = f"auth_token={cookie}"
        return requests.request(method, self.base + path, headers=h, json=json, data=data, timeout=timeout,
                                allow_redirects=False)

    def login(self, user: str, password: str) -> WebSession:
        """POST /api/login with a password; fails the test unless it answers 200 with the cookie."""
        r = self.call("POST", "/api/login", json={"user": user, "password": password})
        assert r.status_code == 200, describe(r)
        return WebSession(r.cookies["auth_token"], r.json()["session"])


def describe(r: requests.Response) -> str:
    """Status and body for an assertion message (bodies of these tests hold no token unless a token was created,
    and those tests never print the body)."""
    return f"HTTP {r.status_code}: {r.text[:500]}"


def raw_request(host: str, port: int, data: bytes, timeout: float = 10.0) -> RawResponse:
    """Sends `data` as is and reads one response."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before taking everything
        return read_response(s)


def read_response(s: socket.socket) -> RawResponse:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a complete response header: {buf[:200]!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return RawResponse(status, headers, rest[:length])
