"""The client itself: HTTP calls with urllib, results as DataFrames or rows, errors with their SQLSTATE."""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

try:  # pandas is optional: without it, sql() returns a Result
    import pandas as _pandas
except ImportError:  # pragma: no cover - depends on the machine
    _pandas = None

DEFAULT_TIMEOUT = 60.0  # seconds for one HTTP call; a long query needs a longer one (Client(timeout=...))
USER_AGENT = "tokengate-python/0.1.0"


# ---------------------------------------------------------------- errors


class Error(Exception):
    """Base class of every error this client raises."""


class ConfigurationError(Error):
    """The client cannot be set up (a missing environment variable, a malformed URL)."""


class TransportError(Error):
    """tokengate could not be reached, or answered something that is not its JSON (a proxy's error page)."""


class DatabaseError(Error):
    """An error reported by tokengate or PostgreSQL, with PostgreSQL's fields.

    sqlstate: the five-character SQLSTATE ("42P01", "28P01", …); message; detail, hint and position when given;
    status: the HTTP status of the answer."""

    def __init__(self, sqlstate: str, message: str, detail: str | None = None, hint: str | None = None,
                 position: int | None = None, status: int | None = None) -> None:
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint
        self.position = position
        self.status = status
        text = f"{sqlstate}: {message}"
        if detail:
            text += f"\nDETAIL: {detail}"
        if hint:
            text += f"\nHINT: {hint}"
        super().__init__(text)


class AuthenticationError(DatabaseError):
    """The token was refused: unknown, revoked, expired (SQLSTATE 28P01) or missing (28000)."""


# ---------------------------------------------------------------- results


@dataclass
class Result:
    """A query result when pandas is not installed (or with Client.sql(..., dataframe=False)).

    columns: column names; types: PostgreSQL type OIDs; rows: lists of Python values; command: the command tag
    word ("SELECT", "INSERT", …); row_count: rows returned or affected."""

    columns: list[str]
    types: list[int]
    rows: list[list[Any]]
    command: str = ""
    row_count: int | None = None
    fields: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


# PostgreSQL type OIDs (pg_type.dat) and how their text form becomes a Python value.
def _bool(text: str) -> bool:
    return text == "t"


def _bytea(text: str) -> bytes:
    return bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode()


def _timestamptz(text: str) -> dt.datetime:
    # PostgreSQL prints "2026-11-30 10:00:00.123456+00" (DateStyle ISO); Python 3.11 reads that form.
    if len(text) >= 3 and text[-3] in "+-" and text[-2:].isdigit():
        text += ":00"
    return dt.datetime.fromisoformat(text)


_PARSERS = {
    16: _bool,                       # bool
    17: _bytea,                      # bytea
    20: int, 21: int, 23: int, 26: int,  # int8, int2, int4, oid
    700: float, 701: float,          # float4, float8
    1700: decimal.Decimal,           # numeric
    114: json.loads, 3802: json.loads,  # json, jsonb
    1082: dt.date.fromisoformat,     # date
    1083: dt.time.fromisoformat,     # time
    1114: dt.datetime.fromisoformat,  # timestamp
    1184: _timestamptz,              # timestamptz
    2950: uuid.UUID,                 # uuid
}


def _parse(value: str | None, type_oid: int) -> Any:
    if value is None:
        return None
    parser = _PARSERS.get(type_oid)
    if parser is None:
        return value
    try:
        return parser(value)
    except (ValueError, ArithmeticError):
        return value  # "Infinity", "NaN" dates and the like stay text


def _param(value: Any) -> str | None:
    """A Python value as the text PostgreSQL reads for a $n parameter."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return _array_literal(value)  # for $1::int[], = ANY($1)
    if isinstance(value, dict):
        return json.dumps(value)  # for $1::jsonb
    return str(value)


def _array_literal(values: Iterable[Any]) -> str:
    r"""A PostgreSQL array literal: {"1","2",NULL,"a \"b"}, nested lists as nested arrays."""
    parts = []
    for v in values:
        if v is None:
            parts.append("NULL")
        elif isinstance(v, (list, tuple)):
            parts.append(_array_literal(v))
        else:
            text = _param(v)
            parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


def _token_user(token: str) -> str | None:
    """The `user` claim of a token (not verified here: tokengate verifies it)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        user = json.loads(base64.urlsafe_b64decode(payload)).get("user")
        return user if isinstance(user, str) else None
    except (IndexError, ValueError, AttributeError):
        return None


# ---------------------------------------------------------------- the client


class Client:
    """SQL and token management through one tokengate HTTP gateway, authenticated with an API token.

    url: the gateway, e.g. "https://db.example.com:8432"; token: an API token (CREATE API TOKEN);
    database: the database sql() runs in (default: TOKENGATE_DATABASE, else "postgres");
    ca_file: a PEM file of CA certificates for https (default: the system's trust store);
    timeout: seconds for one HTTP call."""

    def __init__(self, url: str, token: str, database: str | None = None, ca_file: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        if not url:
            raise ConfigurationError("url is required, e.g. http://127.0.0.1:8432")
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigurationError(f"url must be http://HOST:PORT or https://HOST:PORT, got {url!r}")
        if not token:
            raise ConfigurationError("token is required (an API token from CREATE API TOKEN)")
        self.url = url.rstrip("/")
        self._token = token
        self.user = _token_user(token)
        self.database = database or os.environ.get("TOKENGATE_DATABASE") or "postgres"
        self.timeout = timeout
        self._ssl = ssl.create_default_context(cafile=ca_file) if parsed.scheme == "https" else None

    @classmethod
    def from_env(cls, **kwargs: Any) -> "Client":
        """A client from TOKENGATE_URL and TOKENGATE_ACCESS_TOKEN (and TOKENGATE_DATABASE, TOKENGATE_CA_FILE when
        set); keyword arguments override them."""
        url = kwargs.pop("url", None) or os.environ.get("TOKENGATE_URL")
        token = kwargs.pop("token", None) or os.environ.get("TOKENGATE_ACCESS_TOKEN")
        if not url:
            raise ConfigurationError("TOKENGATE_URL is not set (e.g. export TOKENGATE_URL=http://127.0.0.1:8432)")
        if not token:
            raise ConfigurationError("TOKENGATE_ACCESS_TOKEN is not set (an API token from CREATE API TOKEN)")
        kwargs.setdefault("ca_file", os.environ.get("TOKENGATE_CA_FILE") or None)
        return cls(url, token, **kwargs)

    def __repr__(self) -> str:  # never the token
        return f"tokengate.Client(url={self.url!r}, user={self.user!r}, database={self.database!r})"

    # ---- SQL ----

    def sql(self, query: str, params: Sequence[Any] | None = None, dataframe: bool | None = None):
        """Runs one statement with $1, $2, … parameters; returns a pandas DataFrame when pandas is installed
        (dataframe=None) or asked for (True), else a Result. Raises DatabaseError with the SQLSTATE."""
        body = {"query": query, "params": [_param(p) for p in (params or [])]}
        # The connection string names the role and database; the token authenticates in place of a password.
        conn = urllib.parse.urlunsplit(("postgresql", f"{urllib.parse.quote(self.user or '', safe='')}@"
                                        f"{urllib.parse.urlsplit(self.url).netloc}",
                                        "/" + urllib.parse.quote(self.database, safe=""), "", ""))
        answer = self._call("POST", "/sql", body, headers={
            "Neon-Connection-String": conn,
            "Neon-Raw-Text-Output": "true",
            "Neon-Array-Mode": "true",
        })
        result = self._result(answer)
        want_frame = dataframe if dataframe is not None else _pandas is not None
        if not want_frame:
            return result
        if _pandas is None:
            raise ConfigurationError("dataframe=True needs pandas (Debian: apt install python3-pandas)")
        return _pandas.DataFrame(result.rows, columns=result.columns)

    @staticmethod
    def _result(answer: Mapping[str, Any]) -> Result:
        fields = list(answer.get("fields") or [])
        types = [int(f.get("dataTypeID", 25)) for f in fields]
        rows = [[_parse(v, types[i]) for i, v in enumerate(row)] for row in answer.get("rows") or []]
        return Result(columns=[f.get("name", "") for f in fields], types=types, rows=rows,
                      command=answer.get("command", ""), row_count=answer.get("rowCount"), fields=fields)

    # ---- tokens (the REST API) ----

    def me(self) -> dict[str, Any]:
        """Who the token stands for: user, is_admin, token_name, expires_at."""
        return self._call("GET", "/api/me")

    def tokens(self, user: str | None = None, all_users: bool = False) -> list[dict[str, Any]]:
        """SHOW API TOKENS [FOR USER user | FOR ALL USERS]: one dict per token, oldest first."""
        query = {"user": user} if user else ({"all": "true"} if all_users else {})
        return self._call("GET", "/api/tokens" + _query(query))["tokens"]

    def create_token(self, name: str | None = None, max_duration: str | None = None, comment: str | None = None,
                     user: str | None = None) -> dict[str, Any]:
        """CREATE API TOKEN: {"name", "token", "expires_at"}. The value is shown this once: keep it safe."""
        body = {k: v for k, v in (("name", name), ("max_duration", max_duration), ("comment", comment)) if v is not None}
        return self._call("POST", "/api/tokens" + _query({"user": user} if user else {}), body)

    def set_comment(self, name: str, comment: str | None, user: str | None = None) -> None:
        """ALTER API TOKEN name SET COMMENT (None removes it)."""
        self._call("PATCH", f"/api/tokens/{urllib.parse.quote(name, safe='')}" + _query({"user": user} if user else {}),
                   {"comment": comment})

    def revoke_token(self, name: str, user: str | None = None) -> None:
        """DROP API TOKEN name: sessions that use it end at once."""
        self._call("DELETE", f"/api/tokens/{urllib.parse.quote(name, safe='')}" + _query({"user": user} if user else {}))

    # ---- HTTP ----

    def _call(self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        h = {"Authorization": f"Bearer {self._token}", "Accept": "application/json", "User-Agent": USER_AGENT}
        if data is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._ssl) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        except urllib.error.URLError as e:
            raise TransportError(f"cannot reach tokengate at {self.url}: {e.reason}") from None
        except (TimeoutError, OSError) as e:
            raise TransportError(f"no answer from tokengate at {self.url}: {e}") from None
        if status == 204:
            return None
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            raise TransportError(f"{method} {path}: HTTP {status} with a body that is not JSON: "
                                 f"{raw[:200].decode('utf-8', 'replace')!r}") from None
        if 200 <= status < 300:
            return answer
        raise _error(answer, status, f"{method} {path}")


def _query(params: Mapping[str, str]) -> str:
    return "?" + urllib.parse.urlencode(params) if params else ""


def _error(answer: Any, status: int, what: str) -> Error:
    if not isinstance(answer, dict) or "message" not in answer:
        return TransportError(f"{what}: HTTP {status}: {str(answer)[:200]}")
    code = str(answer.get("code") or "")
    position = answer.get("position")
    try:
        position = int(position) if position not in (None, "") else None
    except (TypeError, ValueError):
        position = None
    cls = AuthenticationError if status == 401 or code.startswith("28") else DatabaseError
    return cls(code, str(answer["message"]), answer.get("detail") or None, answer.get("hint") or None, position,
               status)
