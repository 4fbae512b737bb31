"""Exceptions: one class per error code the server answers.

The server's errors are `{"error": {"code": ..., "message": ...}}`; the code
picks the class, so callers catch `NoFreeKey` rather than compare strings.
Messages are the server's own, which never contain keys or tokens.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type


class KeywardError(Exception):
    """Base of every error this package raises.

    `code` is the server's error code (or a client-side one such as
    `connection_error`), `status` the HTTP status (None when no answer came).
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: Optional[int] = None,
        body: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.body: Dict[str, Any] = body or {}


class KeywardConnectionError(KeywardError):
    """No answer: the connection failed or timed out on every attempt."""


class ServerError(KeywardError):
    """5xx: the server failed; the outcome of a change is unknown."""


class Unavailable(ServerError):
    """503 on every attempt (shutting down, timed out, store not ready)."""


class InvalidRequest(KeywardError):
    """400: the request was malformed (bad name, count, outcome, …)."""


class Unauthorized(KeywardError):
    """401: no or a wrong admin token (pass `token=` or set KEYWARD_TOKEN)."""


class NotFound(KeywardError):
    """404 with a code this package has no own class for."""


class Conflict(KeywardError):
    """409 with a code this package has no own class for."""


class NoFreeKey(NotFound):
    """No free key in the pool.

    `retry_after` is in seconds (from the server's `retry_after_ms`): when
    the first lease, cooldown or quarantine ends, or None when no key will
    become free by itself.
    """

    @property
    def retry_after(self) -> Optional[float]:
        ms = self.body.get("retry_after_ms")
        return None if ms is None else float(ms) / 1000.0


class KeyNotFound(NotFound):
    """The key does not exist (never did, deleted, or expired)."""


class PoolNotFound(NotFound):
    """The pool does not exist."""


class KeyspaceNotFound(NotFound):
    """The keyspace does not exist."""


class TokenNotIssued(NotFound):
    """The token was never issued by this keyspace."""


class BatchNotFound(NotFound):
    """No batch of that name in the keyspace."""


class ActivationNotFound(NotFound):
    """The token has no activation with that fingerprint."""


class LeaseMismatch(Conflict):
    """The lease_id is not the key's current lease: the lease was lost."""


class NotLeased(Conflict):
    """The key is not leased (released already, expired, or disabled)."""


class AlreadyActivated(Conflict):
    """The token has no activation slot left."""


class TokenRevoked(Conflict):
    """The token was revoked."""


class KeyspaceExhausted(Conflict):
    """Every token of the keyspace was issued (nothing issued now)."""


class KeyspaceImmutable(Conflict):
    """A keyspace of that name exists with other settings."""


class IdempotencyKeyReused(KeywardError):
    """422: the Idempotency-Key was used before for another request."""


class IdempotencyInFlight(Conflict):
    """The first request with this Idempotency-Key is still running."""


_BY_CODE: Dict[str, Type[KeywardError]] = {
    "no_free_key": NoFreeKey,
    "key_not_found": KeyNotFound,
    "pool_not_found": PoolNotFound,
    "keyspace_not_found": KeyspaceNotFound,
    "token_not_issued": TokenNotIssued,
    "batch_not_found": BatchNotFound,
    "activation_not_found": ActivationNotFound,
    "lease_mismatch": LeaseMismatch,
    "not_leased": NotLeased,
    "already_activated": AlreadyActivated,
    "token_revoked": TokenRevoked,
    "keyspace_exhausted": KeyspaceExhausted,
    "keyspace_immutable": KeyspaceImmutable,
    "idempotency_key_reused": IdempotencyKeyReused,
    "idempotency_in_flight": IdempotencyInFlight,
    "unauthorized": Unauthorized,
}


def error_from_response(status: int, body: Any) -> KeywardError:
    """The exception for a non-2xx answer: by code first, then by status."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = str(err.get("code", "unknown"))
        message = str(err.get("message", ""))
        fields: Dict[str, Any] = err
    else:
        code, message, fields = f"http_{status}", "unexpected answer", {}
    cls = _BY_CODE.get(code)
    if cls is None:
        if status == 503:
            cls = Unavailable
        elif status >= 500:
            cls = ServerError
        elif status == 400:
            cls = InvalidRequest
        elif status == 404:
            cls = NotFound
        elif status == 409:
            cls = Conflict
        else:
            cls = KeywardError
    return cls(code, message, status, fields)
