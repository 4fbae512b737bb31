"""The server's JSON objects as typed, read-only values.

Fields the server adds later are ignored; fields it leaves out get their
documented defaults, so a client works against older and newer servers.
Key texts are secrets: they are left out of every `repr`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Optional


def _time(value: Any) -> Optional[datetime]:
    if value is None:
        return None
    text = str(value)
    # fromisoformat reads a trailing "Z" only from Python 3.11 on.
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def _int(value: Any) -> Optional[int]:
    return None if value is None else int(value)


@dataclass(frozen=True)
class Key:
    """A pool key: `state` is free, leased, cooling, quarantined or disabled."""

    key: str = field(repr=False)
    state: str
    created_at: Optional[datetime]
    alive_until: Optional[datetime]
    lease_id: Optional[int]
    leased_until: Optional[datetime]
    labels: Dict[str, str]
    available_at: Optional[datetime]
    reason: Optional[str]
    failures: int

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> Key:
        return cls(
            key=str(obj["key"]),
            state=str(obj["state"]),
            created_at=_time(obj.get("created_at")),
            alive_until=_time(obj.get("alive_until")),
            lease_id=_int(obj.get("lease_id")),
            leased_until=_time(obj.get("leased_until")),
            labels={str(k): str(v) for k, v in (obj.get("labels") or {}).items()},
            available_at=_time(obj.get("available_at")),
            reason=obj.get("reason"),
            failures=int(obj.get("failures") or 0),
        )


@dataclass(frozen=True)
class PoolInfo:
    """A pool's settings (TTLs in seconds) and its counts by key state."""

    name: str
    lease_ttl: float
    keepalive_ttl: float
    key_length: int
    cooldown: float
    max_failures: int
    quarantine: float
    total: int
    free: int
    leased: int
    cooling: int
    quarantined: int
    disabled: int

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> PoolInfo:
        return cls(
            name=str(obj["name"]),
            lease_ttl=int(obj["lease_ttl_ms"]) / 1000.0,
            keepalive_ttl=int(obj["keepalive_ttl_ms"]) / 1000.0,
            key_length=int(obj["key_length"]),
            cooldown=int(obj.get("cooldown_ms", 60000)) / 1000.0,
            max_failures=int(obj.get("max_failures", 3)),
            quarantine=int(obj.get("quarantine_ms", 300000)) / 1000.0,
            total=int(obj["total"]),
            free=int(obj["free"]),
            leased=int(obj["leased"]),
            cooling=int(obj.get("cooling", 0)),
            quarantined=int(obj.get("quarantined", 0)),
            disabled=int(obj.get("disabled", 0)),
        )


@dataclass(frozen=True)
class Imported:
    """The answer to an import: the new keys, and those the pool had already."""

    keys: List[Key]
    existing: List[str] = field(repr=False)


@dataclass(frozen=True)
class Activation:
    """One activation slot of a token."""

    fingerprint: Optional[str]
    activated_at: Optional[datetime]


@dataclass(frozen=True)
class Token:
    """A token's status: `state` is issued, activated or revoked."""

    token: str
    state: str
    activated_at: Optional[datetime]
    activations: List[Activation]
    batch: Optional[str]
    reason: Optional[str]

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> Token:
        return cls(
            token=str(obj["token"]),
            state=str(obj["state"]),
            activated_at=_time(obj.get("activated_at")),
            activations=[
                Activation(a.get("fingerprint"), _time(a.get("activated_at")))
                for a in obj.get("activations") or []
            ],
            batch=obj.get("batch"),
            reason=obj.get("reason"),
        )


@dataclass(frozen=True)
class Issued:
    """Tokens just issued, and how many the keyspace has left."""

    tokens: List[str]
    remaining: int


@dataclass(frozen=True)
class KeyspaceInfo:
    """A keyspace's definition and counts (`raw` keeps every field sent)."""

    name: str
    alphabet: str
    length: int
    capacity: int
    issued: int
    activated: int
    remaining: int
    revoked: int
    max_activations: int
    raw: Dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> KeyspaceInfo:
        return cls(
            name=str(obj["name"]),
            alphabet=str(obj["alphabet"]),
            length=int(obj["length"]),
            capacity=int(obj.get("capacity_str", obj["capacity"])),
            issued=int(obj["issued"]),
            activated=int(obj["activated"]),
            remaining=int(obj.get("remaining_str", obj["remaining"])),
            revoked=int(obj.get("revoked", 0)),
            max_activations=int(obj.get("max_activations", 1)),
            raw=obj,
        )


@dataclass(frozen=True)
class Batch:
    """Counts of one batch of issued tokens."""

    name: str
    issued: int
    activated: int
    revoked: int

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> Batch:
        return cls(
            name=str(obj["name"]),
            issued=int(obj["issued"]),
            activated=int(obj["activated"]),
            revoked=int(obj.get("revoked", 0)),
        )
