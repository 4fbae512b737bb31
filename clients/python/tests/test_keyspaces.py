"""Keyspace operations that the server has had since Part 1."""

from __future__ import annotations

import pytest

import keyward


def test_issue_status_activate(client: keyward.Client, name: str) -> None:
    ks = client.keyspace(name)
    created = ks.create("абвгдежзиклмнопрстуфхцчшэюя", 5)
    assert (created.name, created.length, created.capacity, created.issued) == (name, 5, 27**5, 0)
    token = ks.issue()
    assert len(token) == 5
    assert ks.status(token).state == "issued"
    activated = ks.activate(token)
    assert activated.state == "activated" and activated.activated_at is not None
    with pytest.raises(keyward.AlreadyActivated):
        ks.activate(token)
    info = ks.info()
    assert (info.issued, info.activated, info.remaining) == (1, 1, 27**5 - 1)


def test_keyspace_errors_raise_their_classes(client: keyward.Client, name: str) -> None:
    ks = client.keyspace(name)
    with pytest.raises(keyward.KeyspaceNotFound):
        ks.info()
    ks.create("ab", 2)
    assert ks.create("ab", 2).capacity == 4, "an identical create is fine"
    with pytest.raises(keyward.KeyspaceImmutable):
        ks.create("ab", 3)
    with pytest.raises(keyward.InvalidRequest) as caught:
        ks.status("abc")
    assert caught.value.code == "invalid_token"
    issued = {ks.issue() for _ in range(4)}
    assert len(issued) == 4
    with pytest.raises(keyward.KeyspaceExhausted):
        ks.issue()


def test_a_token_not_issued_is_reported_as_such(client: keyward.Client, name: str) -> None:
    ks = client.keyspace(name)
    ks.create("0123456789", 12)
    with pytest.raises(keyward.TokenNotIssued):
        ks.status("000000000000")


async def test_async_keyspace_issue_and_activate(server: object, name: str) -> None:
    from server import TOKEN, Server

    assert isinstance(server, Server)
    async with keyward.AsyncClient(server.url, token=TOKEN) as c:
        ks = c.keyspace(name)
        await ks.create("0123456789", 8)
        token = await ks.issue()
        assert (await ks.activate(token)).state == "activated"
        assert (await ks.status(token)).state == "activated"
        assert (await ks.info()).activated == 1
