"""A real keyward server process for the tests, and a fault-injecting proxy.

`Server` starts the release binary (or $KEYWARD_BIN) on a free loopback
port and can kill -9 and restart it on the same port and store. `Proxy`
stands between a client and the server to drop an answer after the server
acted on the request, or to answer 503 itself: the faults a retrying client
must survive.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

import httpx

REPO = Path(__file__).resolve().parents[3]
TOKEN = "test-admin-token"


def binary() -> str:
    path = os.environ.get("KEYWARD_BIN") or str(REPO / "target" / "release" / "keyward")
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            f"no keyward binary at {path}: build it (cargo build --release --locked -p keyward-cli) or set KEYWARD_BIN"
        )
    return path


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` until true, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class Server:
    def __init__(self, store: str, workdir: Path, extra: Optional[List[str]] = None) -> None:
        self.store = store
        self.workdir = workdir
        self.extra = extra or []
        self.port = 0
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None
        self.starts += 1
        log_path = self.workdir / f"server-{self.starts}.log"
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [binary(), "serve", "--listen", f"127.0.0.1:{self.port}", "--store", self.store, *self.extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "KEYWARD_ADMIN_TOKEN": TOKEN, "NO_COLOR": "1"},
            )
        pattern = re.compile(r"addr=127\.0\.0\.1:(\d+)")

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"keyward exited: {log_path.read_text()}")
            match = pattern.search(log_path.read_text(errors="replace"))
            if match:
                self.port = int(match.group(1))
                return True
            return False

        wait_for(listening, 15.0, "the server to listen")

        def ready() -> bool:
            try:
                return httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 15.0, "/readyz")

    def kill(self) -> None:
        """kill -9: no flush, no goodbye."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()


def _read_message(sock: socket.socket, buf: bytearray, is_response: bool, method: str = "") -> Optional[bytes]:
    """One HTTP/1.1 message (Content-Length framed) from `sock`; None on EOF."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head_end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:head_end])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        if name.strip().lower() == b"transfer-encoding":
            raise RuntimeError("chunked bodies are not supported by the test proxy")
    if is_response and (method == "HEAD" or head.split(b" ")[1] in (b"204", b"304")):
        length = 0
    while len(buf) < head_end + length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    message = bytes(buf[: head_end + length])
    del buf[: head_end + length]
    return message


class Proxy:
    """Forwards HTTP/1.1 to `upstream_port`, recording requests and injecting faults.

    `drop_next(n, before_drop)`: the next n requests reach the server, but
    their answers are thrown away and the client's connection closed (after
    calling `before_drop`, e.g. to kill -9 and restart the server).
    `fail_next(n)`: the next n requests are answered 503 by the proxy itself.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests: List[bytes] = []
        self.responses: List[bytes] = []
        self._drops = 0
        self._fails = 0
        self._before_drop: Optional[Callable[[], None]] = None
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: List[threading.Thread] = []
        self._closed = False
        accept = threading.Thread(target=self._accept, name="test-proxy", daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drop_next(self, n: int = 1, before_drop: Optional[Callable[[], None]] = None) -> None:
        with self._lock:
            self._drops, self._before_drop = n, before_drop

    def fail_next(self, n: int = 1) -> None:
        with self._lock:
            self._fails = n

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), name="test-proxy-conn", daemon=True)
            t.start()

    def _serve(self, client: socket.socket) -> None:
        upstream: Optional[socket.socket] = None
        cbuf, ubuf = bytearray(), bytearray()
        try:
            for _ in range(10_000):
                request = _read_message(client, cbuf, False)
                if request is None:
                    return
                method = request.split(b" ", 1)[0].decode()
                with self._lock:
                    self.requests.append(request)
                    fail = self._fails > 0
                    if fail:
                        self._fails -= 1
                if fail:
                    payload = b'{"error":{"code":"unavailable","message":"injected by the test proxy"}}'
                    client.sendall(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                        + f"content-length: {len(payload)}\r\n\r\n".encode()
                        + payload
                    )
                    continue
                if upstream is None:
                    upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30)
                    ubuf = bytearray()
                upstream.sendall(request)
                response = _read_message(upstream, ubuf, True, method)
                if response is None:
                    return
                with self._lock:
                    self.responses.append(response)
                    drop = self._drops > 0
                    if drop:
                        self._drops -= 1
                    hook = self._before_drop
                if drop:
                    upstream.close()
                    upstream = None
                    if hook is not None:
                        hook()
                    return
                client.sendall(response)
        except OSError:
            return
        finally:
            client.close()
            if upstream is not None:
                upstream.close()


def header(message: bytes, name: str) -> Optional[str]:
    """The value of header `name` in a raw HTTP message, or None."""
    head = message.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None
