"""What the sync and async clients share: settings, paths, bodies, retries.

Only the I/O differs between `Client` and `AsyncClient`; everything that
decides what is sent, what is retried and how long to wait lives here once.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import quote

import httpx

from ._errors import KeywardError, Unavailable, error_from_response

DEFAULT_URL = "http://127.0.0.1:8080"
OUTCOMES = ("ok", "rate_limited", "failed")


@dataclass(frozen=True)
class Retry:
    """How a call is retried after a connection error, a timeout or a 503.

    Capped exponential backoff with full jitter: before attempt n+1 wait a
    random time in [0, min(cap, base * 2**n)]; stop after `attempts` tries
    or once `total` seconds have passed since the first, whichever is first.
    A mutating call keeps its Idempotency-Key across the retries, so on a
    server with idempotency keys a retry never has a second effect.
    """

    attempts: int = 8
    base: float = 0.05
    cap: float = 2.0
    total: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the failed attempt number `attempt` (0-based)."""
        return random.uniform(0.0, min(self.cap, self.base * (2.0**attempt)))


def resolve_url(base_url: Optional[str]) -> str:
    return (base_url or os.environ.get("KEYWARD_URL") or DEFAULT_URL).rstrip("/")


def resolve_headers(token: Optional[str]) -> Dict[str, str]:
    token = token if token is not None else os.environ.get("KEYWARD_TOKEN")
    headers = {"Accept": "application/json", "User-Agent": "keyward-python/0.1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def seg(part: str) -> str:
    """One path segment, percent-encoded (imported keys may hold `/`, `?`, …)."""
    return quote(part, safe="")


def ms(seconds: Optional[float]) -> Optional[int]:
    """Seconds (as everywhere in Python) to the wire's integer milliseconds."""
    return None if seconds is None else int(round(seconds * 1000))


def body(**fields: Any) -> bytes:
    """A JSON body of the fields that are not None (the server refuses null)."""
    return json.dumps({k: v for k, v in fields.items() if v is not None}).encode()


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


@dataclass
class Call:
    """One logical call: sent once, then again on each retry, unchanged."""

    method: str
    path: str
    content: Optional[bytes] = None
    params: Optional[Mapping[str, str]] = None
    extra_timeout: float = 0.0
    idempotency_key: Optional[str] = None

    @property
    def mutating(self) -> bool:
        return self.method in ("POST", "PUT", "DELETE")

    def headers(self) -> Dict[str, str]:
        headers: Dict[str, str] = {}
        if self.content is not None:
            headers["Content-Type"] = "application/json"
        if self.mutating:
            if self.idempotency_key is None:
                self.idempotency_key = new_idempotency_key()
            headers["Idempotency-Key"] = self.idempotency_key
        return headers


def retryable_status(status: int, parsed: Any) -> bool:
    if status == 503:
        return True
    if status == 409 and isinstance(parsed, dict):
        err = parsed.get("error")
        # The first request with this key is still running: its answer will be replayed.
        return isinstance(err, dict) and err.get("code") == "idempotency_in_flight"
    return False


def parse(response: httpx.Response) -> Tuple[int, Any]:
    if response.status_code == 204 or not response.content:
        return response.status_code, None
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


def check(status: int, parsed: Any) -> Any:
    if 200 <= status < 300:
        return parsed
    raise error_from_response(status, parsed)


def answer(response: httpx.Response) -> Tuple[Optional[KeywardError], Any]:
    """`(None, parsed JSON)` for a final answer, `(error, None)` for one worth
    retrying; raises the error of a final refusal."""
    status, parsed = parse(response)
    if not retryable_status(status, parsed):
        return None, check(status, parsed)
    try:
        check(status, parsed)
    except KeywardError as exc:
        return exc, None
    return Unavailable("unavailable", "retryable answer", status), None


def connection_error(exc: Exception) -> KeywardError:
    from ._errors import KeywardConnectionError

    return KeywardConnectionError("connection_error", type(exc).__name__)
