"""tokengate's Python client: SQL and API tokens over tokengate's HTTP gateway, with an API token.

    import tokengate
    client = tokengate.Client.from_env()          # TOKENGATE_URL, TOKENGATE_ACCESS_TOKEN
    df = client.sql("select 1 as answer")         # a pandas DataFrame (rows when pandas is missing)
    df = client.sql("select * from t where id = $1", [42])

Only the standard library is needed (urllib); pandas is used when it is installed. Errors are exceptions carrying
the SQLSTATE (`err.sqlstate`), as PostgreSQL reports it. See docs/python.md.
"""
from __future__ import annotations

from .client import (
    AuthenticationError,
    Client,
    ConfigurationError,
    DatabaseError,
    Error,
    Result,
    TransportError,
)

__all__ = [
    "AuthenticationError",
    "Client",
    "ConfigurationError",
    "DatabaseError",
    "Error",
    "Result",
    "TransportError",
]
__version__ = "0.1.0"
