"""The asyncio client and its lease guard against a real server."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import pytest

import keyward
from server import TOKEN, Server

SHORT_TTL = 0.3


@pytest.fixture
async def aclient(server: Server) -> AsyncIterator[keyward.AsyncClient]:
    async with keyward.AsyncClient(server.url, token=TOKEN) as c:
        yield c


def keepalive_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("keyward-keepalive")]


async def short_pool(aclient: keyward.AsyncClient, name: str, keys: int = 1) -> keyward.AsyncPool:
    pool = aclient.pool(name)
    await pool.configure(lease_ttl=SHORT_TTL)
    await pool.generate(keys)
    return pool


async def test_async_guard_keeps_the_key_across_several_ttls_and_frees_it(
    aclient: keyward.AsyncClient, name: str
) -> None:
    pool = await short_pool(aclient, name)
    async with pool.lease() as lease:
        assert len(keepalive_tasks()) == 1
        end = time.monotonic() + 5 * SHORT_TTL
        checks = 0
        while time.monotonic() < end:
            now = await pool.key(lease.key)
            assert now.state == "leased" and now.lease_id == lease.lease_id
            checks += 1
            await asyncio.sleep(SHORT_TTL / 4)
        assert checks >= 10 and not lease.lost
    assert (await pool.key(lease.key)).state == "free"
    assert keepalive_tasks() == []


async def test_async_on_lost_coroutine_is_awaited_when_the_key_is_disabled(
    aclient: keyward.AsyncClient, name: str
) -> None:
    pool = await short_pool(aclient, name)
    lost = asyncio.Event()

    async def on_lost(lease: keyward.AsyncLease) -> None:
        lost.set()

    async with pool.lease(on_lost=on_lost) as lease:
        await pool.disable(lease.key)
        await asyncio.wait_for(lost.wait(), 5.0)
        assert lease.lost
    assert (await pool.key(lease.key)).state == "disabled"
    assert keepalive_tasks() == []


async def test_async_exception_reports_failed(aclient: keyward.AsyncClient, name: str) -> None:
    pool = await short_pool(aclient, name)
    with pytest.raises(ValueError):
        async with pool.lease() as lease:
            raise ValueError("boom")
    key = await pool.key(lease.key)
    assert key.state == "free" and key.failures == 1
    assert keepalive_tasks() == []


async def test_async_cancelled_block_releases_and_leaks_no_task(aclient: keyward.AsyncClient, name: str) -> None:
    pool = await short_pool(aclient, name)
    started = asyncio.Event()
    leased: list[keyward.AsyncLease] = []

    async def job() -> None:
        async with pool.lease() as lease:
            leased.append(lease)
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(job())
    await asyncio.wait_for(started.wait(), 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    key = await pool.key(leased[0].key)
    assert key.state == "free" and key.failures == 0, "a cancellation is not the key's failure"
    assert keepalive_tasks() == []


async def test_async_plain_await_lease_and_rate_limited_release(aclient: keyward.AsyncClient, name: str) -> None:
    pool = await short_pool(aclient, name)
    lease = await pool.lease()
    released = await lease.release("rate_limited", retry_after=30)
    assert released is not None and released.state == "cooling"
    with pytest.raises(keyward.NoFreeKey) as caught:
        await pool.lease()
    assert caught.value.retry_after is not None and caught.value.retry_after > 20
    assert keepalive_tasks() == []


async def test_async_keys_iterates_every_page(aclient: keyward.AsyncClient, name: str) -> None:
    pool = aclient.pool(name)
    made = {k.key for k in await pool.generate(5)}
    seen = [k.key async for k in pool.keys(page_size=2)]
    assert sorted(seen) == sorted(made)
    imported = await pool.import_keys(["imp-1"], labels={"a": "b"})
    assert [k.labels for k in imported.keys] == [{"a": "b"}]
    assert (await pool.info()).total == 6


async def test_async_fleet_never_holds_a_key_twice(aclient: keyward.AsyncClient, name: str) -> None:
    pool = await short_pool(aclient, name, keys=2)
    held: set[str] = set()
    done = [0]

    async def worker() -> None:
        for i in range(5):
            async with pool.lease(wait=10) as lease:
                assert lease.key not in held
                held.add(lease.key)
                await asyncio.sleep(SHORT_TTL * (1.5 if i == 0 else 0.2))
                held.discard(lease.key)
                done[0] += 1

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(5))), 60)
    assert done[0] == 25
    info = await pool.info()
    assert (info.free, info.leased) == (2, 0)
    assert keepalive_tasks() == []
