"""Fixtures: one real keyward server per store for the session, clients, fresh pool names."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Iterator

import pytest

import keyward
from server import TOKEN, Server

STORES = ["memory", "sqlite"]


@pytest.fixture(scope="session", params=STORES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir: Path = tmp_path_factory.mktemp(f"keyward-{request.param}")
    store = "memory:" if request.param == "memory" else f"sqlite:{workdir / 'keyward.db'}"
    srv = Server(store, workdir)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own, on SQLite, that the test may kill and restart."""
    srv = Server(f"sqlite:{tmp_path / 'keyward.db'}", tmp_path)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[keyward.Client]:
    with keyward.Client(server.url, token=TOKEN) as c:
        yield c


@pytest.fixture
def name() -> str:
    """A pool or keyspace name no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


def keepalive_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("keyward-keepalive")]


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    """Every test ends with no keep-alive thread running."""
    yield
    assert keepalive_threads() == []
