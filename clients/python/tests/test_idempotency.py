"""Exactly one effect per logical call: needs the server's Idempotency-Key support.

The proxy lets the server act on a request, then throws its answer away
(and kills -9 and restarts the server first where the test says so); the
client cannot tell that from a lost request and retries with the same
Idempotency-Key. Only a server that records answers makes these pass.
"""

from __future__ import annotations

from typing import Iterator

import pytest

import keyward
from server import TOKEN, Proxy, Server, header

PATIENT = keyward.Retry(attempts=100, base=0.02, cap=0.2, total=30.0)


@pytest.fixture
def proxy(sqlite_server: Server) -> Iterator[Proxy]:
    p = Proxy(sqlite_server.port)
    yield p
    p.close()


@pytest.fixture
def client(proxy: Proxy) -> Iterator[keyward.Client]:
    with keyward.Client(proxy.url, token=TOKEN, retry=PATIENT) as c:
        yield c


def replayed(proxy: Proxy) -> int:
    return sum(1 for r in proxy.responses if header(r, "Idempotent-Replayed") == "true")


def test_a_lost_answer_to_generate_is_replayed_not_repeated(client: keyward.Client, proxy: Proxy, name: str) -> None:
    pool = client.pool(name)
    proxy.drop_next(1)
    keys = pool.generate(3)
    assert pool.info().total == 3
    assert {k.key for k in keys} == {k.key for k in pool.keys()}
    assert replayed(proxy) == 1


def test_a_lease_whose_answer_died_with_the_server_is_the_same_lease_after_restart(
    client: keyward.Client, proxy: Proxy, sqlite_server: Server, name: str
) -> None:
    pool = client.pool(name)
    pool.configure(lease_ttl=30)
    pool.generate(3)
    proxy.drop_next(1, before_drop=sqlite_server.restart)
    with pool.lease(keepalive=False) as lease:
        assert sqlite_server.starts == 2, "the server was killed and restarted mid-call"
        info = pool.info()
        assert (info.leased, info.free) == (1, 2), "one lease for the two attempts"
        assert pool.key(lease.key).lease_id == lease.lease_id
    assert pool.info().leased == 0
    assert replayed(proxy) == 1


def test_a_release_whose_answer_was_lost_reports_its_outcome_once(
    client: keyward.Client, proxy: Proxy, sqlite_server: Server, name: str
) -> None:
    pool = client.pool(name)
    pool.configure(max_failures=2, quarantine=60)
    pool.generate(1)
    lease = pool.lease(keepalive=False)
    proxy.drop_next(1, before_drop=sqlite_server.restart)
    released = lease.release("failed", reason="HTTP 402")
    assert released is not None and released.failures == 1 and released.state == "free"
    assert pool.key(lease.key).failures == 1, "a repeated failed release would have quarantined it"


def test_keyspace_issue_after_a_lost_answer_issues_one_token(
    client: keyward.Client, proxy: Proxy, sqlite_server: Server, name: str
) -> None:
    ks = client.keyspace(name)
    ks.create("0123456789", 8)
    proxy.drop_next(1, before_drop=sqlite_server.restart)
    token = ks.issue()
    assert ks.info().issued == 1
    assert ks.status(token).state == "issued"


def test_reusing_an_idempotency_key_for_another_request_is_refused(sqlite_server: Server, name: str) -> None:
    from keyward._core import Call, body

    with keyward.Client(sqlite_server.url, token=TOKEN) as c:
        c.pool(name).generate(1)
        first = Call("POST", f"/v1/pools/{name}/keys", body(count=1))
        c.request(first)
        reused = Call("POST", f"/v1/pools/{name}/keys", body(count=2), idempotency_key=first.idempotency_key)
        with pytest.raises(keyward.IdempotencyKeyReused):
            c.request(reused)
        assert c.pool(name).info().total == 2
