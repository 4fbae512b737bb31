"""Keyspaces for shops: batches, fingerprints, deactivation, revocation, formats."""

from __future__ import annotations

import pytest

import keyward


def test_issue_many_under_a_batch_and_count_it(client: keyward.Client, name: str) -> None:
    ks = client.keyspace(name)
    ks.create("digits", 10)
    issued = ks.issue_many(25, batch="spring-sale")
    assert len(issued.tokens) == 25 and len(set(issued.tokens)) == 25
    assert issued.remaining == 10**10 - 25
    one = ks.issue(batch="spring-sale")
    assert ks.status(one).batch == "spring-sale"
    ks.activate(issued.tokens[0])
    ks.revoke(issued.tokens[1], reason="refunded")
    batch = ks.batch("spring-sale")
    assert (batch.name, batch.issued, batch.activated, batch.revoked) == ("spring-sale", 26, 1, 1)
    with pytest.raises(keyward.BatchNotFound):
        ks.batch("no-such-batch")


def test_fingerprints_share_a_slot_and_deactivate_frees_it(client: keyward.Client, name: str) -> None:
    ks = client.keyspace(name)
    ks.create("crockford", 8, max_activations=2)
    token = ks.issue()
    first = ks.activate(token, fingerprint="laptop")
    assert first.state == "activated" and [a.fingerprint for a in first.activations] == ["laptop"]
    assert len(ks.activate(token, fingerprint="laptop").activations) == 1, "the same fingerprint is the same slot"
    ks.activate(token, fingerprint="desktop")
    with pytest.raises(keyward.AlreadyActivated):
        ks.activate(token, fingerprint="phone")
    ks.deactivate(token, "laptop")
    assert [a.fingerprint for a in ks.status(token).activations] == ["desktop"]
    with pytest.raises(keyward.ActivationNotFound):
        ks.deactivate(token, "laptop")
    ks.deactivate(token, "desktop")
    again = ks.status(token)
    assert again.state == "issued" and again.activated_at is None


def test_a_revoked_token_cannot_be_activated(client: keyward.Client, name: str) -> None:
    ks = client.keyspace(name)
    ks.create("unambiguous", 10)
    token = ks.issue()
    revoked = ks.revoke(token, reason="chargeback")
    assert revoked.state == "revoked" and revoked.reason == "chargeback"
    assert ks.revoke(token).state == "revoked", "revoking again changes nothing"
    with pytest.raises(keyward.TokenRevoked):
        ks.activate(token)
    assert ks.info().revoked == 1


def test_formatted_tokens_with_a_check_character(client: keyward.Client, name: str) -> None:
    ks = client.keyspace(name)
    ks.create("crockford", 8, format={"group": 4, "separator": "-", "prefix": "SHOP-", "check": True})
    token = ks.issue()
    assert token.startswith("SHOP-") and token.count("-") == 2
    bare = token[len("SHOP-"):].replace("-", "").lower()
    assert ks.status(bare).token == token, "accepted without prefix and separators, in any case"
    last = bare[-1]
    wrong = bare[:-1] + ("0" if last != "0" else "1")
    with pytest.raises(keyward.InvalidRequest) as caught:
        ks.status(wrong)
    assert caught.value.code == "invalid_token"


def test_max_activations_can_be_raised_later(client: keyward.Client, name: str) -> None:
    ks = client.keyspace(name)
    ks.create("digits", 6)
    token = ks.issue()
    ks.activate(token)
    with pytest.raises(keyward.AlreadyActivated):
        ks.activate(token)
    assert ks.create("digits", 6, max_activations=3).max_activations == 3
    assert len(ks.activate(token).activations) == 2


async def test_async_shop_calls(server: object, name: str) -> None:
    from server import TOKEN, Server

    assert isinstance(server, Server)
    async with keyward.AsyncClient(server.url, token=TOKEN) as c:
        ks = c.keyspace(name)
        await ks.create("digits", 8, max_activations=1)
        issued = await ks.issue_many(3, batch="b1")
        await ks.activate(issued.tokens[0], fingerprint="device-1")
        await ks.deactivate(issued.tokens[0], "device-1")
        await ks.revoke(issued.tokens[1])
        batch = await ks.batch("b1")
        assert (batch.issued, batch.activated, batch.revoked) == (3, 0, 1)
