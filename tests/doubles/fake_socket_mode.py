"""A local fake of Slack's Socket Mode WebSocket: RFC 6455 handshake and framing over plain TCP on 127.0.0.1
(slack_sdk's builtin client uses a plain socket for any port but 443). It says `hello`, sends envelopes the way
Slack does (`{"envelope_id", "type", "payload", "accepts_response_payload"}`) and records the app's acks.

Like Slack, it takes up to `max_connections` (10) connections for the app at once — one per replica, or several
per process — and sends each envelope to ONE of them, never to all. Connections are numbered 0, 1, 2… in the order
they were opened (a number is never reused, so a reconnect gets a new one). Each gets its own `hello`, whose
`num_connections` counts the open connections including itself. A connection beyond the limit is refused with
HTTP 429 before the upgrade (`refused` counts them; what Slack itself answers there is not documented).

- `wait_connected(count=N)`: until N connections are open.
- `send_envelope(..., connection=i)`: to connection i; without `connection`, round-robin over the open ones
  (with one connection, always that one). It returns the number of the connection it used.
- `wait_ack(envelope_id)`: the ack, an `Ack` — the JSON object the app sent (a dict, as before) whose
  `connection` attribute is the number of the connection it arrived on. `acks` lists them all, in arrival order;
  `sent` lists `(envelope_id, connection)` for every envelope sent.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_CONNECTIONS = 10
"""Slack's limit of simultaneous Socket Mode connections per app."""


class Ack(dict[str, Any]):
    """One ack as the app sent it (the JSON object), plus `connection`: the number of the connection it came on."""

    def __init__(self, data: dict[str, Any], *, connection: int) -> None:
        super().__init__(data)
        self.connection = connection

    def __repr__(self) -> str:
        return f"Ack(connection={self.connection}, {dict.__repr__(self)})"


@dataclass(eq=False)
class _Connection:
    index: int
    sock: socket.socket
    peer: tuple[str, int]
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    open: bool = False
    """True from `hello` until either side closes it."""


class FakeSocketMode:
    def __init__(self, *, max_connections: int = MAX_CONNECTIONS) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)  # the accept loop looks at `_stop` this often
        self.port = int(self._server.getsockname()[1])
        self.max_connections = max_connections
        self.acks: list[Ack] = []
        self.sent: list[tuple[str, int]] = []
        self.refused = 0
        self._connections: list[_Connection] = []
        self._next_index = 0
        self._round_robin = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a connection opened or closed, or an ack arrived
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept_loop, name="fake-socket-mode", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/link/?ticket=fake"

    def __enter__(self) -> FakeSocketMode:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with self._lock:
            connections = list(self._connections)
        for sock in [c.sock for c in connections] + [self._server]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv() (close() alone may not)
            with contextlib.suppress(OSError):
                sock.close()
        for thread in [self._thread, *self._threads]:
            thread.join(timeout=5)

    # ------------------------------------------------------------------------------------------- queries

    def open_connections(self) -> list[int]:
        """The numbers of the connections open now, oldest first."""
        with self._lock:
            return [c.index for c in self._connections if c.open]

    def peer(self, connection: int) -> tuple[str, int]:
        """The app's (host, port) end of connection `connection`."""
        return self._get(connection).peer

    def wait_connected(self, timeout: float = 10, *, count: int = 1) -> None:
        """Until at least `count` connections are open (have been sent `hello` and are not closed)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._open_count() >= count, timeout):
                raise AssertionError(f"the app opened {self._open_count()} Socket Mode connection(s), not {count}, "
                                     f"within {timeout:g} s")

    # ------------------------------------------------------------------------------------------- envelopes

    def send_envelope(self, *, envelope_id: str, kind: str, payload: dict[str, Any],
                      connection: int | None = None, timeout: float = 10) -> int:
        """Send one envelope to connection `connection` (round-robin over the open ones when None), waiting up
        to `timeout` s for it (or for any) to be open. Returns the number of the connection it went to."""
        with self._changed:
            if connection is None:
                if not self._changed.wait_for(lambda: self._open_count() > 0, timeout):
                    raise AssertionError("no Socket Mode connection is open to send an envelope on")
                opened = [c for c in self._connections if c.open]
                target = opened[self._round_robin % len(opened)]
                self._round_robin += 1
            else:
                if not self._changed.wait_for(lambda: self._find(connection) is not None, timeout):
                    raise AssertionError(f"there is no Socket Mode connection {connection}; "
                                         f"open: {[c.index for c in self._connections if c.open]}")
                found = self._find(connection)
                assert found is not None
                target = found
            if not target.open:
                raise AssertionError(f"Socket Mode connection {target.index} is closed")
            self.sent.append((envelope_id, target.index))
        self._send_frame(target, 0x1, json.dumps({
            "envelope_id": envelope_id, "type": kind, "payload": payload,
            "accepts_response_payload": kind != "events_api", "retry_attempt": 0, "retry_reason": ""}).encode())
        return target.index

    def wait_ack(self, envelope_id: str, timeout: float = 10) -> Ack:
        """The app's ack of `envelope_id` (the first one, if it acked twice); `.connection` says where it came."""
        def found() -> Ack | None:
            return next((ack for ack in self.acks if ack.get("envelope_id") == envelope_id), None)

        with self._changed:
            if self._changed.wait_for(lambda: found() is not None, timeout):
                ack = found()
                assert ack is not None
                return ack
            raise AssertionError(f"no ack for {envelope_id} within {timeout:g} s; acks: {self.acks}")

    # ---------------------------------------------------------------------------------------- wire

    def _open_count(self) -> int:  # with _lock held
        return sum(1 for c in self._connections if c.open)

    def _find(self, index: int) -> _Connection | None:  # with _lock held
        return next((c for c in self._connections if c.index == index), None)

    def _get(self, index: int) -> _Connection:
        with self._lock:
            found = self._find(index)
        if found is None:
            raise KeyError(f"no Socket Mode connection {index}")
        return found

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, peer = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            thread = threading.Thread(target=self._serve, args=(sock, (str(peer[0]), int(peer[1]))),
                                      name="fake-socket-mode-connection", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        conn: _Connection | None = None
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                request += chunk
            key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key"))
            accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest()).decode()
            with self._changed:
                if self._open_count() >= self.max_connections:
                    self.refused += 1
                    refuse = True
                else:
                    refuse = False
                    conn = _Connection(index=self._next_index, sock=sock, peer=peer, open=True)
                    conn.send_lock.acquire()  # held until the upgrade and hello are out: nothing may come first
                    self._next_index += 1
                    self._connections.append(conn)
                    hello = {"type": "hello", "num_connections": self._open_count(),
                             "connection_info": {"app_id": "A0DRBOT"}, "debug_info": {}}
            if refuse:
                sock.sendall(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            assert conn is not None
            try:
                sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
                sock.sendall(_frame(0x1, json.dumps(hello).encode()))
            finally:
                conn.send_lock.release()
            with self._changed:
                self._changed.notify_all()
            while not self._stop.is_set():
                opcode, data = self._read_frame(sock)
                if opcode == 0x1:
                    with self._changed:
                        self.acks.append(Ack(json.loads(data.decode()), connection=conn.index))
                        self._changed.notify_all()
                elif opcode == 0x9:
                    self._send_frame(conn, 0xA, data)
                elif opcode == 0x8:
                    with contextlib.suppress(OSError):
                        self._send_frame(conn, 0x8, data[:2])
                    return
        except (OSError, ConnectionError, StopIteration):
            return
        finally:
            with self._changed:
                if conn is not None:
                    conn.open = False
                self._changed.notify_all()
            with contextlib.suppress(OSError):
                sock.close()

    def _read_exact(self, conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _read_frame(self, conn: socket.socket) -> tuple[int, bytes]:
        first, second = self._read_exact(conn, 2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read_exact(conn, 2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read_exact(conn, 8))[0]
        mask = self._read_exact(conn, 4) if second & 0x80 else b"\0\0\0\0"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self._read_exact(conn, length)))
        return first & 0x0F, payload

    def _send_frame(self, conn: _Connection, opcode: int, data: bytes) -> None:
        with conn.send_lock:
            conn.sock.sendall(_frame(opcode, data))


def _frame(opcode: int, data: bytes) -> bytes:
    """One unmasked, unfragmented frame (the server side of RFC 6455)."""
    header = bytes([0x80 | opcode])
    if len(data) < 126:
        header += bytes([len(data)])
    elif len(data) < 65536:
        header += bytes([126]) + struct.pack("!H", len(data))
    else:
        header += bytes([127]) + struct.pack("!Q", len(data))
    return header + data
