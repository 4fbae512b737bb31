"""The blocking client: `Client`, its `Pool` and `Keyspace` handles, `Lease`."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Type

import httpx

from . import _core
from ._core import Call, Retry, body, ms, seg
from ._errors import KeywardError
from ._models import Batch, Imported, Issued, Key, KeyspaceInfo, PoolInfo, Token

log = logging.getLogger("keyward")

# A cached pool's lease TTL is fetched again after this long, so a changed
# setting reaches the guard without a GET per lease.
_TTL_CACHE_SECONDS = 30.0


class Client:
    """A connection pool to one keyward server; thread-safe, share it.

    `base_url` defaults to KEYWARD_URL, then http://127.0.0.1:8080; `token`
    (the server's admin token) to KEYWARD_TOKEN. `timeout` is per attempt.
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        *,
        token: Optional[str] = None,
        timeout: float = 10.0,
        retry: Retry = Retry(),
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        self.base_url = _core.resolve_url(base_url)
        self.retry = retry
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=_core.resolve_headers(token),
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pool(self, name: str = "default") -> Pool:
        return Pool(self, name)

    def keyspace(self, name: str = "default") -> Keyspace:
        return Keyspace(self, name)

    def request(
        self, call: Call, *, budget: Optional[float] = None, stop: Optional[threading.Event] = None
    ) -> Any:
        """Send `call`, retrying per `self.retry`; the parsed JSON, or raise.

        `budget` caps the seconds spent retrying below `retry.total`; a set
        `stop` ends the retries early (the guard's shutdown).
        """
        policy = self.retry
        deadline = time.monotonic() + min(policy.total, budget if budget is not None else policy.total)
        headers = call.headers()
        attempt = 0
        while True:
            try:
                response = self._http.request(
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
            if stop is not None:
                if stop.wait(pause):
                    raise failure
            else:
                time.sleep(pause)


class Pool:
    """One pool of keys on the server (no request is sent to make it)."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self._path = f"/v1/pools/{seg(name)}"
        self._ttl: Optional[float] = None
        self._ttl_at = 0.0
        self._ttl_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Pool({self.name!r})"

    def _key_path(self, key: str, action: str = "") -> str:
        return f"{self._path}/keys/{seg(key)}" + (f"/{action}" if action else "")

    def configure(
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
        info = PoolInfo.from_json(self.client.request(Call("PUT", self._path, content)))
        self._remember_ttl(info.lease_ttl)
        return info

    def info(self) -> PoolInfo:
        """The pool object: settings and counts by state."""
        info = PoolInfo.from_json(self.client.request(Call("GET", self._path)))
        self._remember_ttl(info.lease_ttl)
        return info

    def delete(self) -> None:
        """Delete the pool and all its keys."""
        self.client.request(Call("DELETE", self._path))

    def generate(self, count: int = 1, *, labels: Optional[Dict[str, str]] = None) -> List[Key]:
        """Generate `count` new keys (1–10000)."""
        reply = self.client.request(Call("POST", f"{self._path}/keys", body(count=count, labels=labels)))
        return [Key.from_json(k) for k in reply["keys"]]

    def import_keys(self, keys: Iterable[str], *, labels: Optional[Dict[str, str]] = None) -> Imported:
        """Add your own keys (1–10000); keys the pool has already stay unchanged."""
        reply = self.client.request(
            Call("POST", f"{self._path}/keys", body(keys=list(keys), labels=labels))
        )
        return Imported([Key.from_json(k) for k in reply["keys"]], [str(k) for k in reply["existing"]])

    def key(self, key: str) -> Key:
        """One key object."""
        return Key.from_json(self.client.request(Call("GET", self._key_path(key))))

    def delete_key(self, key: str) -> None:
        """Purge one key."""
        self.client.request(Call("DELETE", self._key_path(key)))

    def keys(self, *, state: Optional[str] = None, page_size: int = 100) -> Iterator[Key]:
        """Every key (in `state` if given), fetched a page at a time."""
        cursor: Optional[str] = None
        while True:
            params = {"limit": str(page_size)}
            if state is not None:
                params["state"] = state
            if cursor is not None:
                params["cursor"] = cursor
            reply = self.client.request(Call("GET", f"{self._path}/keys", params=params))
            for k in reply["keys"]:
                yield Key.from_json(k)
            cursor = reply.get("next_cursor")
            if cursor is None:
                return

    def lease(
        self,
        *,
        wait: Optional[float] = None,
        on_lost: Optional[Callable[[Lease], object]] = None,
        keepalive: bool = True,
    ) -> Lease:
        """Lease a random free key, waiting up to `wait` seconds for one.

        The returned `Lease` keeps the key alive from a background thread
        until released; use it as `with pool.lease() as lease:` (released on
        exit) or call `lease.release(...)` yourself. Raises `NoFreeKey`.
        """
        wait_ms = ms(wait)
        reply = self.client.request(
            Call("POST", f"{self._path}/lease", body(wait_ms=wait_ms), extra_timeout=wait or 0.0)
        )
        leased_at = time.monotonic()
        key = Key.from_json(reply)
        try:
            ttl = self._lease_ttl()
        except BaseException:
            self.release(key.key, lease_id=key.lease_id)
            raise
        return Lease(self, key, ttl, leased_at, on_lost, keepalive)

    def release(
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
        return Key.from_json(self.client.request(Call("POST", self._key_path(key, "release"), content)))

    def keepalive(
        self,
        key: str,
        *,
        lease_id: Optional[int] = None,
        budget: Optional[float] = None,
        stop: Optional[threading.Event] = None,
    ) -> Key:
        """Keep the key alive; with its current `lease_id`, extend the lease too."""
        call = Call("POST", self._key_path(key, "keepalive"), body(lease_id=lease_id))
        return Key.from_json(self.client.request(call, budget=budget, stop=stop))

    def disable(self, key: str, *, reason: Optional[str] = None) -> Key:
        """Take the key out of use until enabled; a lease on it ends now."""
        return Key.from_json(self.client.request(Call("POST", self._key_path(key, "disable"), body(reason=reason))))

    def enable(self, key: str) -> Key:
        """A cooling, quarantined or disabled key becomes free now."""
        return Key.from_json(self.client.request(Call("POST", self._key_path(key, "enable"), body())))

    def _remember_ttl(self, ttl: float) -> None:
        with self._ttl_lock:
            self._ttl, self._ttl_at = ttl, time.monotonic()

    def _lease_ttl(self) -> float:
        with self._ttl_lock:
            if self._ttl is not None and time.monotonic() - self._ttl_at < _TTL_CACHE_SECONDS:
                return self._ttl
        return self.info().lease_ttl


class Lease:
    """A leased key, kept alive every lease_ttl / 3 until released.

    A refused keep-alive (the key was disabled, deleted, or leased to
    someone else after this lease expired) marks the lease `lost` and calls
    `on_lost(lease)` once, from the keep-alive thread. On leaving a `with`
    block the key is released with the outcome given to `report()`, or
    `failed` if an `Exception` left the block and nothing was reported
    (KeyboardInterrupt, SystemExit and cancellation are not the key's fault:
    they release it with the default outcome, `ok`).
    """

    def __init__(
        self,
        pool: Pool,
        key: Key,
        lease_ttl: float,
        leased_at: float,
        on_lost: Optional[Callable[[Lease], object]],
        keepalive: bool,
    ) -> None:
        self.pool = pool
        self.info = key
        self.key = key.key
        self.lease_id = key.lease_id
        self.lease_ttl = lease_ttl
        self._on_lost = on_lost
        self._report: Optional[Dict[str, Any]] = None
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._released = False
        self._lock = threading.Lock()
        # Monotonic time by which the server surely counts the lease as over
        # unless a keep-alive lands: measured from before the lease answer.
        self._expires = leased_at + lease_ttl
        self._thread: Optional[threading.Thread] = None
        if keepalive:
            self._thread = threading.Thread(
                target=self._keep_alive, name=f"keyward-keepalive-{pool.name}", daemon=True
            )
            self._thread.start()

    def __repr__(self) -> str:
        return f"Lease(pool={self.pool.name!r}, lease_id={self.lease_id}, lost={self.lost})"

    @property
    def lost(self) -> bool:
        """True once the server refused a keep-alive or the lease ran out."""
        return self._lost.is_set()

    def report(self, outcome: str, *, retry_after: Optional[float] = None, reason: Optional[str] = None) -> None:
        """Set the outcome sent on release: ok, rate_limited (cool for `retry_after` s) or failed."""
        if outcome not in _core.OUTCOMES:
            raise ValueError(f"outcome must be one of {_core.OUTCOMES}")
        self._report = {"outcome": outcome, "retry_after": retry_after, "reason": reason}

    def release(
        self,
        outcome: Optional[str] = None,
        *,
        retry_after: Optional[float] = None,
        reason: Optional[str] = None,
    ) -> Optional[Key]:
        """Stop the keep-alive and give the key back (once; later calls do nothing).

        Without arguments the outcome set by `report()` is sent. Returns the
        key object, or None when the lease was lost (nothing to release).
        """
        if outcome is not None:
            self.report(outcome, retry_after=retry_after, reason=reason)
        with self._lock:
            if self._released:
                return None
            self._released = True
        self._stop_keepalive()
        if self.lost:
            return None
        fields = self._report or {}
        return self.pool.release(self.key, lease_id=self.lease_id, **fields)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if exc_type is not None and issubclass(exc_type, Exception) and self._report is None:
            self.report("failed", reason=f"client exception {exc_type.__name__}")
        try:
            self.release()
        except KeywardError as err:
            if err.status in (404, 409):
                # The server no longer counts this lease as ours: nothing to give back.
                self._lost.set()
            elif exc_type is None:
                raise
            else:
                log.warning("keyward: release after an exception failed: %s", err.code)

    def _stop_keepalive(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _keep_alive(self) -> None:
        interval = self.lease_ttl / 3.0
        while not self._stop.wait(interval):
            sent = time.monotonic()
            try:
                self.pool.keepalive(
                    self.key,
                    lease_id=self.lease_id,
                    budget=max(self._expires - sent, 0.0),
                    stop=self._stop,
                )
            except KeywardError as err:
                if self._stop.is_set():
                    return
                refused = err.status is not None and 400 <= err.status < 500
                if refused or time.monotonic() >= self._expires:
                    self._mark_lost()
                    return
                continue
            self._expires = sent + self.lease_ttl

    def _mark_lost(self) -> None:
        self._lost.set()
        if self._on_lost is not None:
            try:
                self._on_lost(self)
            except Exception:
                log.exception("keyward: on_lost callback raised")


class Keyspace:
    """One keyspace of activation tokens on the server."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self._path = f"/v1/keyspaces/{seg(name)}"

    def __repr__(self) -> str:
        return f"Keyspace({self.name!r})"

    def _token_path(self, token: str, action: str = "") -> str:
        return f"{self._path}/tokens/{seg(token)}" + (f"/{action}" if action else "")

    def create(
        self,
        alphabet: str,
        length: int,
        *,
        format: Optional[Dict[str, Any]] = None,
        max_activations: Optional[int] = None,
    ) -> KeyspaceInfo:
        """Create the keyspace (an identical one is fine; another is KeyspaceImmutable)."""
        content = body(alphabet=alphabet, length=length, format=format, max_activations=max_activations)
        return KeyspaceInfo.from_json(self.client.request(Call("PUT", self._path, content)))

    def info(self) -> KeyspaceInfo:
        """The keyspace object: definition and counts."""
        return KeyspaceInfo.from_json(self.client.request(Call("GET", self._path)))

    def issue(self, *, batch: Optional[str] = None) -> str:
        """Issue one token."""
        reply = self.client.request(Call("POST", f"{self._path}/tokens", body(batch=batch)))
        return str(reply["token"])

    def issue_many(self, count: int, *, batch: Optional[str] = None) -> Issued:
        """Issue `count` tokens (1–10000) at once, under a batch name if given."""
        reply = self.client.request(Call("POST", f"{self._path}/tokens", body(count=count, batch=batch)))
        return Issued([str(t) for t in reply["tokens"]], int(reply.get("remaining_str", reply["remaining"])))

    def status(self, token: str) -> Token:
        """The token's state and activations."""
        return Token.from_json(self.client.request(Call("GET", self._token_path(token))))

    def activate(self, token: str, *, fingerprint: Optional[str] = None) -> Token:
        """Take an activation slot; the same fingerprint again is the same slot."""
        content = body(fingerprint=fingerprint)
        return Token.from_json(self.client.request(Call("POST", self._token_path(token, "activate"), content)))

    def deactivate(self, token: str, fingerprint: str) -> None:
        """Free the activation slot held by `fingerprint`."""
        path = f"{self._token_path(token)}/activations/{seg(fingerprint)}"
        self.client.request(Call("DELETE", path))

    def revoke(self, token: str, *, reason: Optional[str] = None) -> Token:
        """Revoke the token for good."""
        return Token.from_json(self.client.request(Call("POST", self._token_path(token, "revoke"), body(reason=reason))))

    def batch(self, name: str) -> Batch:
        """Counts of one batch: issued, activated, revoked."""
        return Batch.from_json(self.client.request(Call("GET", f"{self._path}/batches/{seg(name)}")))
