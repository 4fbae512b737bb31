"""Retries: connection errors, 503s, bounded attempts, the Idempotency-Key header."""

from __future__ import annotations

import threading
import time
from typing import Iterator

import httpx
import pytest

import keyward
from server import TOKEN, Proxy, Server, header, wait_for

PATIENT = keyward.Retry(attempts=200, base=0.02, cap=0.2, total=30.0)


class CountingTransport(httpx.HTTPTransport):
    """The real transport, counting the attempts that go through it."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return super().handle_request(request)


@pytest.fixture
def proxy(sqlite_server: Server) -> Iterator[Proxy]:
    p = Proxy(sqlite_server.port)
    yield p
    p.close()


def test_a_call_made_while_the_server_is_down_succeeds_once_it_is_back(sqlite_server: Server, name: str) -> None:
    transport = CountingTransport()
    with keyward.Client(sqlite_server.url, token=TOKEN, retry=PATIENT, transport=transport) as c:
        pool = c.pool(name)
        pool.generate(2)
        sqlite_server.kill()
        result: list[object] = []
        call = threading.Thread(target=lambda: result.append(pool.generate(3)))
        start = transport.attempts
        call.start()
        wait_for(lambda: transport.attempts >= start + 2, 10.0, "the client to retry against the dead server")
        sqlite_server.start()
        call.join(30)
        assert not call.is_alive() and len(result) == 1
        assert pool.info().total == 5, "the two keys from before the kill and the three after"


def test_retries_are_bounded_and_raise_a_connection_error(sqlite_server: Server, name: str) -> None:
    url = sqlite_server.url
    sqlite_server.kill()
    with keyward.Client(url, token=TOKEN, retry=keyward.Retry(attempts=3, base=0.01, cap=0.05, total=5)) as c:
        started = time.monotonic()
        with pytest.raises(keyward.KeywardConnectionError) as caught:
            c.pool(name).generate(1)
        assert time.monotonic() - started < 5
        assert caught.value.status is None and caught.value.code == "connection_error"


def test_a_503_is_retried_with_the_same_idempotency_key(proxy: Proxy, name: str) -> None:
    with keyward.Client(proxy.url, token=TOKEN, retry=PATIENT) as c:
        pool = c.pool(name)
        proxy.fail_next(2)
        keys = pool.generate(1)
        assert len(keys) == 1 and pool.info().total == 1
    posts = [r for r in proxy.requests if r.startswith(b"POST ")]
    assert len(posts) == 3
    ids = {header(r, "Idempotency-Key") for r in posts}
    assert len(ids) == 1 and None not in ids


def test_503_on_every_attempt_raises_unavailable(proxy: Proxy, name: str) -> None:
    with keyward.Client(proxy.url, token=TOKEN, retry=keyward.Retry(attempts=3, base=0.01, cap=0.02)) as c:
        proxy.fail_next(3)
        with pytest.raises(keyward.Unavailable) as caught:
            c.pool(name).generate(1)
        assert caught.value.status == 503
    assert len(proxy.requests) == 3


def test_every_mutating_call_sends_a_fresh_idempotency_key_and_reads_send_none(proxy: Proxy, name: str) -> None:
    with keyward.Client(proxy.url, token=TOKEN) as c:
        pool = c.pool(name)
        pool.configure(lease_ttl=10)
        pool.generate(1)
        with pool.lease(keepalive=False) as lease:
            pool.keepalive(lease.key, lease_id=lease.lease_id)
        pool.info()
        list(pool.keys())
    writes = [r for r in proxy.requests if r.split(b" ", 1)[0] in (b"POST", b"PUT", b"DELETE")]
    reads = [r for r in proxy.requests if r.startswith(b"GET ")]
    assert len(writes) == 5 and reads
    keys = [header(r, "Idempotency-Key") for r in writes]
    assert None not in keys and len(set(keys)) == len(keys)
    assert all(header(r, "Idempotency-Key") is None for r in reads)
    assert all(header(r, "Authorization") == f"Bearer {TOKEN}" for r in proxy.requests)


def test_a_keepalive_outage_shorter_than_the_lease_does_not_lose_it(sqlite_server: Server, name: str) -> None:
    lost: list[keyward.Lease] = []
    with keyward.Client(sqlite_server.url, token=TOKEN, retry=PATIENT) as c:
        pool = c.pool(name)
        pool.configure(lease_ttl=3)
        pool.generate(1)
        with pool.lease(on_lost=lost.append) as lease:
            sqlite_server.kill()
            sqlite_server.start()
            wait_for(lambda: pool.key(lease.key).leased_until != lease.info.leased_until, 10, "a keep-alive to land")
            assert pool.key(lease.key).lease_id == lease.lease_id
        assert lost == [] and not lease.lost
        assert pool.key(lease.key).state == "free"
