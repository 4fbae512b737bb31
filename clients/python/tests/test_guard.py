"""The blocking lease guard: keep-alive thread, on_lost, outcomes, no leaks."""

from __future__ import annotations

import threading
import time

import pytest

import keyward
from conftest import keepalive_threads
from server import wait_for

SHORT_TTL = 0.3


def short_pool(client: keyward.Client, name: str, keys: int = 1) -> keyward.Pool:
    pool = client.pool(name)
    pool.configure(lease_ttl=SHORT_TTL)
    pool.generate(keys)
    return pool


def test_guard_keeps_the_key_leased_across_several_ttls_and_frees_it_on_exit(client: keyward.Client, name: str) -> None:
    pool = short_pool(client, name)
    with pool.lease() as lease:
        assert len(keepalive_threads()) == 1
        end = time.monotonic() + 5 * SHORT_TTL
        checks = 0
        while time.monotonic() < end:
            now = pool.key(lease.key)
            assert now.state == "leased" and now.lease_id == lease.lease_id
            checks += 1
            time.sleep(SHORT_TTL / 4)
        assert checks >= 10 and not lease.lost
    assert pool.key(lease.key).state == "free"
    assert pool.info().leased == 0
    assert keepalive_threads() == []


def test_without_the_guard_the_same_lease_expires(client: keyward.Client, name: str) -> None:
    pool = short_pool(client, name)
    lease = pool.lease(keepalive=False)
    wait_for(lambda: pool.key(lease.key).state == "free", 5.0, "the unkept lease to end")
    with pytest.raises(keyward.NotLeased):
        pool.release(lease.key, lease_id=lease.lease_id)


def test_on_lost_is_called_when_the_key_is_disabled_from_outside(client: keyward.Client, name: str) -> None:
    pool = short_pool(client, name)
    lost = threading.Event()
    seen: list[keyward.Lease] = []

    def on_lost(lease: keyward.Lease) -> None:
        seen.append(lease)
        lost.set()

    with pool.lease(on_lost=on_lost) as lease:
        client.pool(name).disable(lease.key, reason="revoked by an operator")
        assert lost.wait(5.0), "on_lost was not called"
        assert lease.lost and seen == [lease]
        wait_for(lambda: keepalive_threads() == [], 5.0, "the keep-alive thread to stop")
    key = pool.key(lease.key)
    assert key.state == "disabled" and key.reason == "revoked by an operator"


def test_an_exception_leaving_the_block_reports_failed(client: keyward.Client, name: str) -> None:
    pool = short_pool(client, name)
    pool.configure(max_failures=1, quarantine=60)
    with pytest.raises(RuntimeError, match="upstream broke"):
        with pool.lease() as lease:
            raise RuntimeError("upstream broke")
    key = pool.key(lease.key)
    assert key.state == "quarantined" and key.failures == 1
    assert key.reason is not None and "RuntimeError" in key.reason


def test_a_reported_outcome_wins_over_the_exception(client: keyward.Client, name: str) -> None:
    pool = short_pool(client, name)
    with pytest.raises(KeyError):
        with pool.lease() as lease:
            lease.report("ok")
            raise KeyError("not the key's fault")
    key = pool.key(lease.key)
    assert key.state == "free" and key.failures == 0


def test_report_rate_limited_puts_the_key_in_cooldown(client: keyward.Client, name: str) -> None:
    pool = short_pool(client, name)
    with pool.lease() as lease:
        lease.report("rate_limited", retry_after=30, reason="HTTP 429")
    key = pool.key(lease.key)
    assert key.state == "cooling" and key.reason == "HTTP 429"
    with pytest.raises(keyward.NoFreeKey) as caught:
        pool.lease()
    assert caught.value.retry_after is not None and 25 < caught.value.retry_after <= 30


def test_leaving_a_lost_lease_raises_nothing(client: keyward.Client, name: str) -> None:
    pool = short_pool(client, name)
    with pool.lease(keepalive=False) as lease:
        wait_for(lambda: pool.key(lease.key).state == "free", 5.0, "the lease to expire")
    assert lease.lost


def test_release_from_inside_on_lost_does_not_deadlock(client: keyward.Client, name: str) -> None:
    pool = short_pool(client, name)
    done = threading.Event()

    def on_lost(lease: keyward.Lease) -> None:
        lease.release()
        done.set()

    lease = pool.lease(on_lost=on_lost)
    pool.delete_key(lease.key)
    assert done.wait(5.0)
    wait_for(lambda: keepalive_threads() == [], 5.0, "the keep-alive thread to stop")


def test_a_fleet_of_threads_never_holds_a_key_twice_and_gives_every_key_back(
    client: keyward.Client, name: str
) -> None:
    pool = short_pool(client, name, keys=3)
    held: set[str] = set()
    guard = threading.Lock()
    errors: list[BaseException] = []
    jobs = [0]

    def worker() -> None:
        try:
            for _ in range(6):
                with pool.lease(wait=10) as lease:
                    with guard:
                        assert lease.key not in held, "a key leased twice"
                        held.add(lease.key)
                    time.sleep(SHORT_TTL * 0.5 if jobs[0] % 4 else SHORT_TTL * 1.5)
                    with guard:
                        held.discard(lease.key)
                        jobs[0] += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=worker) for _ in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not any(w.is_alive() for w in workers) and errors == []
    assert jobs[0] == 36
    info = pool.info()
    assert (info.free, info.leased) == (3, 0)
    assert keepalive_threads() == []
