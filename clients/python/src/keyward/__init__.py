"""keyward: a client for the keyward key server.

`Client` (blocking) and `AsyncClient` (asyncio) have the same methods:
`client.pool(name)` for leased keys (`with pool.lease() as lease:` keeps the
key alive and gives it back), `client.keyspace(name)` for activation tokens.
Every change is sent with an Idempotency-Key and retried on connection
errors, timeouts and 503; error codes raise the classes below.
"""

from ._async import AsyncClient, AsyncKeyspace, AsyncLease, AsyncPool
from ._core import Retry
from ._errors import (
    ActivationNotFound,
    AlreadyActivated,
    BatchNotFound,
    Conflict,
    IdempotencyInFlight,
    IdempotencyKeyReused,
    InvalidRequest,
    KeyNotFound,
    KeyspaceExhausted,
    KeyspaceImmutable,
    KeyspaceNotFound,
    KeywardConnectionError,
    KeywardError,
    LeaseMismatch,
    NoFreeKey,
    NotFound,
    NotLeased,
    PoolNotFound,
    ServerError,
    TokenNotIssued,
    TokenRevoked,
    Unauthorized,
    Unavailable,
)
from ._models import Activation, Batch, Imported, Issued, Key, KeyspaceInfo, PoolInfo, Token
from ._sync import Client, Keyspace, Lease, Pool

__all__ = [
    "Activation",
    "ActivationNotFound",
    "AlreadyActivated",
    "AsyncClient",
    "AsyncKeyspace",
    "AsyncLease",
    "AsyncPool",
    "Batch",
    "BatchNotFound",
    "Client",
    "Conflict",
    "IdempotencyInFlight",
    "IdempotencyKeyReused",
    "Imported",
    "InvalidRequest",
    "Issued",
    "Key",
    "KeyNotFound",
    "KeyspaceExhausted",
    "KeyspaceImmutable",
    "KeyspaceInfo",
    "KeyspaceNotFound",
    "Keyspace",
    "KeywardConnectionError",
    "KeywardError",
    "Lease",
    "LeaseMismatch",
    "NoFreeKey",
    "NotFound",
    "NotLeased",
    "Pool",
    "PoolInfo",
    "PoolNotFound",
    "Retry",
    "ServerError",
    "Token",
    "TokenNotIssued",
    "TokenRevoked",
    "Unauthorized",
    "Unavailable",
]
