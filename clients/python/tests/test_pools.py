"""Pool operations of the blocking client against a real server."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

import keyward
from server import TOKEN, Server


def test_configure_then_info_reports_settings_in_seconds(client: keyward.Client, name: str) -> None:
    info = client.pool(name).configure(lease_ttl=1.5, keepalive_ttl=0, cooldown=2, max_failures=2, quarantine=4)
    assert (info.lease_ttl, info.keepalive_ttl, info.cooldown, info.max_failures, info.quarantine) == (1.5, 0, 2, 2, 4)
    again = client.pool(name).info()
    assert again.name == name and again.lease_ttl == 1.5 and again.total == 0


def test_generate_import_and_key_objects(client: keyward.Client, name: str) -> None:
    pool = client.pool(name)
    made = pool.generate(3, labels={"tier": "paid"})
    assert len(made) == 3 and all(k.state == "free" and k.labels == {"tier": "paid"} for k in made)
    imported = pool.import_keys(["sk-a/1?x", "sk-b", made[0].key], labels={"provider": "up"})
    assert sorted(k.key for k in imported.keys) == ["sk-a/1?x", "sk-b"]
    assert imported.existing == [made[0].key]
    odd = pool.key("sk-a/1?x")
    assert odd.key == "sk-a/1?x" and odd.labels == {"provider": "up"} and odd.failures == 0
    assert pool.info().total == 5
    assert "sk-b" not in repr(pool.key("sk-b")), "key texts are secrets: never in a repr"


def test_keys_iterates_over_every_page(client: keyward.Client, name: str) -> None:
    pool = client.pool(name)
    made = {k.key for k in pool.generate(7)}
    assert {k.key for k in pool.keys(page_size=2)} == made
    pool.disable(sorted(made)[0], reason="spare")
    disabled = list(pool.keys(state="disabled", page_size=1))
    assert [(k.key, k.reason) for k in disabled] == [(sorted(made)[0], "spare")]


def test_lease_as_plain_call_and_release_with_rate_limited_outcome(client: keyward.Client, name: str) -> None:
    pool = client.pool(name)
    pool.generate(1)
    lease = pool.lease()
    try:
        assert lease.info.state == "leased" and lease.lease_id is not None
    finally:
        released = lease.release("rate_limited", retry_after=30, reason="HTTP 429")
    assert released is not None and released.state == "cooling" and released.reason == "HTTP 429"
    assert released.available_at is not None
    left = released.available_at - datetime.now(timezone.utc)
    assert timedelta(seconds=25) < left <= timedelta(seconds=31)
    assert lease.release() is None, "a second release does nothing"


def test_no_free_key_carries_retry_after_in_seconds(client: keyward.Client, name: str) -> None:
    pool = client.pool(name)
    pool.configure(lease_ttl=20)
    pool.generate(1)
    with pool.lease():
        with pytest.raises(keyward.NoFreeKey) as caught:
            pool.lease()
        assert caught.value.retry_after is not None and 10 < caught.value.retry_after <= 20
        assert caught.value.code == "no_free_key" and caught.value.status == 404


def test_no_free_key_without_retry_after_when_no_key_will_free_itself(client: keyward.Client, name: str) -> None:
    pool = client.pool(name)
    (k,) = pool.generate(1)
    pool.disable(k.key)
    with pytest.raises(keyward.NoFreeKey) as caught:
        pool.lease()
    assert caught.value.retry_after is None
    assert pool.enable(k.key).state == "free"


def test_errors_raise_their_own_classes(client: keyward.Client, name: str) -> None:
    pool = client.pool(name)
    (k,) = pool.generate(1)
    lease = pool.lease(keepalive=False)
    with pytest.raises(keyward.LeaseMismatch):
        pool.release(k.key, lease_id=(lease.lease_id or 0) + 1000)
    lease.release()
    with pytest.raises(keyward.NotLeased):
        pool.release(k.key, lease_id=lease.lease_id)
    with pytest.raises(keyward.KeyNotFound):
        pool.key("no-such-key")
    with pytest.raises(keyward.PoolNotFound):
        client.pool(name + "-absent").info()
    with pytest.raises(keyward.InvalidRequest) as caught:
        client.pool("bad name!").info()
    assert caught.value.code == "invalid_name"
    with pytest.raises(ValueError):
        pool.release(k.key, outcome="great")
    pool.delete_key(k.key)
    with pytest.raises(keyward.KeyNotFound):
        pool.keepalive(k.key)


def test_keepalive_with_lease_id_extends_the_lease(client: keyward.Client, name: str) -> None:
    pool = client.pool(name)
    pool.configure(lease_ttl=5)
    pool.generate(1)
    lease = pool.lease(keepalive=False)
    before = lease.info.leased_until
    time.sleep(0.02)  # leased_until has millisecond precision: let the clock move
    after = pool.keepalive(lease.key, lease_id=lease.lease_id)
    assert before is not None and after.leased_until is not None and after.leased_until > before
    lease.release()


def test_waiting_lease_gets_the_key_another_thread_releases(client: keyward.Client, name: str) -> None:
    pool = client.pool(name)
    pool.generate(1)
    first = pool.lease()
    got: list[keyward.Lease] = []
    waiter = threading.Thread(target=lambda: got.append(pool.lease(wait=10)))
    waiter.start()
    first.release()
    waiter.join(15)
    assert not waiter.is_alive() and got[0].key == first.key and got[0].lease_id != first.lease_id
    got[0].release()


def test_delete_pool(client: keyward.Client, name: str) -> None:
    pool = client.pool(name)
    pool.generate(2)
    pool.delete()
    with pytest.raises(keyward.PoolNotFound):
        pool.info()


def test_token_and_url_come_from_the_environment(server: Server, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYWARD_URL", server.url)
    monkeypatch.setenv("KEYWARD_TOKEN", TOKEN)
    with keyward.Client() as c:
        assert len(c.pool(name).generate(1)) == 1
    monkeypatch.delenv("KEYWARD_TOKEN")
    with keyward.Client() as c:
        with pytest.raises(keyward.Unauthorized):
            c.pool(name).info()
    with keyward.Client(token="wrong") as c:
        with pytest.raises(keyward.Unauthorized) as caught:
            c.pool(name).info()
        assert "wrong" not in str(caught.value)
