"""The asyncio client: `AsyncClient`, `AsyncPool`, `AsyncKeyspace`, `AsyncLease`.

Same methods as the blocking client; the lease guard's keep-alive is a task
that is cancelled and awaited when the lease ends.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from types import TracebackType
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Generator, Iterable, List, Optional, Type

import httpx

from . import _core
from ._core import Call, Retry, body, ms, seg
from ._errors import KeywardError
from ._models import Batch, Imported, Issued, Key, KeyspaceInfo, PoolInfo, Token

log = logging.getLogger("keyward")

_TTL_CACHE_SECONDS = 30.0


class AsyncClient:
    """An asyncio connection pool to one keyward server (see `Client`)."""

    def __init__(
        self,
        base_url: Optional[str] = None,
        *,
        token: Optional[str] = None,
        timeout: float = 10.0,
        retry: Retry = Retry(),
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        self.base_url = _core.resolve_url(base_url)
        self.retry = retry
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_core.resolve_headers(token),
            timeout=timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def pool(self, name: str = "default") -> AsyncPool:
        return AsyncPool(self, name)

    def keyspace(self, name: str = "default") -> AsyncKeyspace:
        return AsyncKeyspace(self, name)

    async def request(self, call: Call, *, budget: Optional[float] = None) -> Any:
        """Send `call`, retrying per `self.retry`; the parsed JSON, or raise."""
        policy = self.retry
        deadline = time.monotonic() + min(policy.total, budget if budget is not None else policy.total)
        headers = call.headers()
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method,
                    call.path,
                    content=call.content,
                    params=call.params,
                    headers=headers,
                    timeout=self._timeout + call.extra_timeout,
                )
            except httpx.TransportError as exc:
                failure: KeywardError = _core.connection_error(exc)
            else:
                retry, value = _core.answer(response)
                if retry is None:
                    return value
                failure = retry
            attempt += 1
            pause = policy.delay(attempt - 1)
            if attempt >= policy.attempts or time.monotonic() + pause >= deadline:
                raise failure
            await asyncio.sleep(pause)


class AsyncPool:
    """One pool of keys on the server (see `Pool`)."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self.client = client
        self.name = name
        self._path = f"/v1/pools/{seg(name)}"
        self._ttl: Optional[float] = None
        self._ttl_at = 0.0

    def __repr__(self) -> str:
        return f"AsyncPool({self.name!r})"

    def _key_path(self, key: str, action: str = "") -> str:
        return f"{self._path}/keys/{seg(key)}" + (f"/{action}" if action else "")

    async def configure(
        self,
        *,
        lease_ttl: Optional[float] = None,
        keepalive_ttl: Optional[float] = None,
        key_length: Optional[int] = None,
        cooldown: Optional[float] = None,
        max_failures: Optional[int] = None,
        quarantine: Optional[float] = None,
    ) -> PoolInfo:
        """Create the pool or change the given settings (durations in seconds)."""
        content = body(
            lease_ttl_ms=ms(lease_ttl),
            keepalive_ttl_ms=ms(keepalive_ttl),
            key_length=key_length,
            cooldown_ms=ms(cooldown),
            max_failures=max_failures,
            quarantine_ms=ms(quarantine),
        )
        info = PoolInfo.from_json(await self.client.request(Call("PUT", self._path, content)))
        self._remember_ttl(info.lease_ttl)
        return info

    async def info(self) -> PoolInfo:
        """The pool object: settings and counts by state."""
        info = PoolInfo.from_json(await self.client.request(Call("GET", self._path)))
        self._remember_ttl(info.lease_ttl)
        return info

    async def delete(self) -> None:
        """Delete the pool and all its keys."""
        await self.client.request(Call("DELETE", self._path))

    async def generate(self, count: int = 1, *, labels: Optional[Dict[str, str]] = None) -> List[Key]:
        """Generate `count` new keys (1–10000)."""
        reply = await self.client.request(Call("POST", f"{self._path}/keys", body(count=count, labels=labels)))
        return [Key.from_json(k) for k in reply["keys"]]

    async def import_keys(self, keys: Iterable[str], *, labels: Optional[Dict[str, str]] = None) -> Imported:
        """Add your own keys (1–10000); keys the pool has already stay unchanged."""
        reply = await self.client.request(
            Call("POST", f"{self._path}/keys", body(keys=list(keys), labels=labels))
        )
        return Imported([Key.from_json(k) for k in reply["keys"]], [str(k) for k in reply["existing"]])

    async def key(self, key: str) -> Key:
        """One key object."""
        return Key.from_json(await self.client.request(Call("GET", self._key_path(key))))

    async def delete_key(self, key: str) -> None:
        """Purge one key."""
        await self.client.request(Call("DELETE", self._key_path(key)))

    async def keys(self, *, state: Optional[str] = None, page_size: int = 100) -> AsyncIterator[Key]:
        """Every key (in `state` if given), fetched a page at a time."""
        cursor: Optional[str] = None
        while True:
            params = {"limit": str(page_size)}
            if state is not None:
                params["state"] = state
            if cursor is not None:
                params["cursor"] = cursor
            reply = await self.client.request(Call("GET", f"{self._path}/keys", params=params))
            for k in reply["keys"]:
                yield Key.from_json(k)
            cursor = reply.get("next_cursor")
            if cursor is None:
                return

    def lease(
        self,
        *,
        wait: Optional[float] = None,
        on_lost: Optional[Callable[[AsyncLease], object]] = None,
        keepalive: bool = True,
    ) -> _LeaseCall:
        """Lease a random free key: `await pool.lease()` or `async with pool.lease() as lease:`."""
        return _LeaseCall(self, wait, on_lost, keepalive)

    async def _lease(
        self, wait: Optional[float], on_lost: Optional[Callable[[AsyncLease], object]], keepalive: bool
    ) -> AsyncLease:
        reply = await self.client.request(
            Call("POST", f"{self._path}/lease", body(wait_ms=ms(wait)), extra_timeout=wait or 0.0)
        )
        leased_at = time.monotonic()
        key = Key.from_json(reply)
        try:
            ttl = await self._lease_ttl()
        except BaseException:
            await self.release(key.key, lease_id=key.lease_id)
            raise
        return AsyncLease(self, key, ttl, leased_at, on_lost, keepalive)

    async def release(
        self,
        key: str,
        *,
        lease_id: Optional[int] = None,
        outcome: Optional[str] = None,
        retry_after: Optional[float] = None,
        reason: Optional[str] = None,
    ) -> Key:
        """End a lease and report how the key did: ok, rate_limited or failed."""
        if outcome is not None and outcome not in _core.OUTCOMES:
            raise ValueError(f"outcome must be one of {_core.OUTCOMES}")
        content = body(lease_id=lease_id, outcome=outcome, retry_after_ms=ms(retry_after), reason=reason)
        return Key.from_json(await self.client.request(Call("POST", self._key_path(key, "release"), content)))

    async def keepalive(self, key: str, *, lease_id: Optional[int] = None, budget: Optional[float] = None) -> Key:
        """Keep the key alive; with its current `lease_id`, extend the lease too."""
        call = Call("POST", self._key_path(key, "keepalive"), body(lease_id=lease_id))
        return Key.from_json(await self.client.request(call, budget=budget))

    async def disable(self, key: str, *, reason: Optional[str] = None) -> Key:
        """Take the key out of use until enabled; a lease on it ends now."""
        call = Call("POST", self._key_path(key, "disable"), body(reason=reason))
        return Key.from_json(await self.client.request(call))

    async def enable(self, key: str) -> Key:
        """A cooling, quarantined or disabled key becomes free now."""
        return Key.from_json(await self.client.request(Call("POST", self._key_path(key, "enable"), body())))

    def _remember_ttl(self, ttl: float) -> None:
        self._ttl, self._ttl_at = ttl, time.monotonic()

    async def _lease_ttl(self) -> float:
        if self._ttl is not None and time.monotonic() - self._ttl_at < _TTL_CACHE_SECONDS:
            return self._ttl
        return (await self.info()).lease_ttl


class _LeaseCall:
    """What `AsyncPool.lease()` returns: awaitable, and an async context manager."""

    def __init__(
        self,
        pool: AsyncPool,
        wait: Optional[float],
        on_lost: Optional[Callable[[AsyncLease], object]],
        keepalive: bool,
    ) -> None:
        self._pool, self._wait, self._on_lost, self._keepalive = pool, wait, on_lost, keepalive
        self._lease: Optional[AsyncLease] = None

    def __await__(self) -> Generator[Any, None, AsyncLease]:
        return self._pool._lease(self._wait, self._on_lost, self._keepalive).__await__()

    async def __aenter__(self) -> AsyncLease:
        self._lease = await self._pool._lease(self._wait, self._on_lost, self._keepalive)
        return self._lease

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        assert self._lease is not None
        await self._lease.__aexit__(exc_type, exc, tb)


class AsyncLease:
    """A leased key, kept alive every lease_ttl / 3 by a task until released (see `Lease`).

    `on_lost` may be a plain function or a coroutine function.
    """

    def __init__(
        self,
        pool: AsyncPool,
        key: Key,
        lease_ttl: float,
        leased_at: float,
        on_lost: Optional[Callable[[AsyncLease], object]],
        keepalive: bool,
    ) -> None:
        self.pool = pool
        self.info = key
        self.key = key.key
        self.lease_id = key.lease_id
        self.lease_ttl = lease_ttl
        self._on_lost = on_lost
        self._report: Optional[Dict[str, Any]] = None
        self._lost = False
        self._released = False
        self._expires = leased_at + lease_ttl
        self._task: Optional[asyncio.Task[None]] = None
        if keepalive:
            self._task = asyncio.get_running_loop().create_task(
                self._keep_alive(), name=f"keyward-keepalive-{pool.name}"
            )

    def __repr__(self) -> str:
        return f"AsyncLease(pool={self.pool.name!r}, lease_id={self.lease_id}, lost={self.lost})"

    @property
    def lost(self) -> bool:
        """True once the server refused a keep-alive or the lease ran out."""
        return self._lost

    def report(self, outcome: str, *, retry_after: Optional[float] = None, reason: Optional[str] = None) -> None:
        """Set the outcome sent on release: ok, rate_limited (cool for `retry_after` s) or failed."""
        if outcome not in _core.OUTCOMES:
            raise ValueError(f"outcome must be one of {_core.OUTCOMES}")
        self._report = {"outcome": outcome, "retry_after": retry_after, "reason": reason}

    async def release(
        self,
        outcome: Optional[str] = None,
        *,
        retry_after: Optional[float] = None,
        reason: Optional[str] = None,
    ) -> Optional[Key]:
        """Stop the keep-alive and give the key back (once); None when the lease was lost."""
        if outcome is not None:
            self.report(outcome, retry_after=retry_after, reason=reason)
        if self._released:
            return None
        self._released = True
        await self._stop_keepalive()
        if self._lost:
            return None
        fields = self._report or {}
        return await self.pool.release(self.key, lease_id=self.lease_id, **fields)

    async def __aenter__(self) -> AsyncLease:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if exc_type is not None and issubclass(exc_type, Exception) and self._report is None:
            self.report("failed", reason=f"client exception {exc_type.__name__}")
        try:
            await self.release()
        except KeywardError as err:
            if err.status in (404, 409):
                self._lost = True
            elif exc_type is None:
                raise
            else:
                log.warning("keyward: release after an exception failed: %s", err.code)

    async def _stop_keepalive(self) -> None:
        task = self._task
        if task is None or task is asyncio.current_task():
            return
        task.cancel()
        # asyncio.wait never raises the task's CancelledError, so a caller that
        # is itself being cancelled still gets to release the key.
        await asyncio.wait([task])

    async def _keep_alive(self) -> None:
        interval = self.lease_ttl / 3.0
        while True:
            await asyncio.sleep(interval)
            sent = time.monotonic()
            try:
                await self.pool.keepalive(self.key, lease_id=self.lease_id, budget=max(self._expires - sent, 0.0))
            except KeywardError as err:
                refused = err.status is not None and 400 <= err.status < 500
                if refused or time.monotonic() >= self._expires:
                    await self._mark_lost()
                    return
                continue
            self._expires = sent + self.lease_ttl

    async def _mark_lost(self) -> None:
        self._lost = True
        if self._on_lost is not None:
            try:
                result = self._on_lost(self)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("keyward: on_lost callback raised")


class AsyncKeyspace:
    """One keyspace of activation tokens on the server (see `Keyspace`)."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self.client = client
        self.name = name
        self._path = f"/v1/keyspaces/{seg(name)}"

    def __repr__(self) -> str:
        return f"AsyncKeyspace({self.name!r})"

    def _token_path(self, token: str, action: str = "") -> str:
        return f"{self._path}/tokens/{seg(token)}" + (f"/{action}" if action else "")

    async def create(
        self,
        alphabet: str,
        length: int,
        *,
        format: Optional[Dict[str, Any]] = None,
        max_activations: Optional[int] = None,
    ) -> KeyspaceInfo:
        """Create the keyspace (an identical one is fine; another is KeyspaceImmutable)."""
        content = body(alphabet=alphabet, length=length, format=format, max_activations=max_activations)
        return KeyspaceInfo.from_json(await self.client.request(Call("PUT", self._path, content)))

    async def info(self) -> KeyspaceInfo:
        """The keyspace object: definition and counts."""
        return KeyspaceInfo.from_json(await self.client.request(Call("GET", self._path)))

    async def issue(self, *, batch: Optional[str] = None) -> str:
        """Issue one token."""
        reply = await self.client.request(Call("POST", f"{self._path}/tokens", body(batch=batch)))
        return str(reply["token"])

    async def issue_many(self, count: int, *, batch: Optional[str] = None) -> Issued:
        """Issue `count` tokens (1–10000) at once, under a batch name if given."""
        reply = await self.client.request(Call("POST", f"{self._path}/tokens", body(count=count, batch=batch)))
        return Issued([str(t) for t in reply["tokens"]], int(reply.get("remaining_str", reply["remaining"])))

    async def status(self, token: str) -> Token:
        """The token's state and activations."""
        return Token.from_json(await self.client.request(Call("GET", self._token_path(token))))

    async def activate(self, token: str, *, fingerprint: Optional[str] = None) -> Token:
        """Take an activation slot; the same fingerprint again is the same slot."""
        call = Call("POST", self._token_path(token, "activate"), body(fingerprint=fingerprint))
        return Token.from_json(await self.client.request(call))

    async def deactivate(self, token: str, fingerprint: str) -> None:
        """Free the activation slot held by `fingerprint`."""
        await self.client.request(Call("DELETE", f"{self._token_path(token)}/activations/{seg(fingerprint)}"))

    async def revoke(self, token: str, *, reason: Optional[str] = None) -> Token:
        """Revoke the token for good."""
        call = Call("POST", self._token_path(token, "revoke"), body(reason=reason))
        return Token.from_json(await self.client.request(call))

    async def batch(self, name: str) -> Batch:
        """Counts of one batch: issued, activated, revoked."""
        return Batch.from_json(await self.client.request(Call("GET", f"{self._path}/batches/{seg(name)}")))
