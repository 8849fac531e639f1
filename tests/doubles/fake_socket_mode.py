"""A local fake of Slack's Socket Mode WebSocket: RFC 6455 handshake and framing over plain TCP on 127.0.0.1
(slack_sdk's builtin client uses a plain socket for any port but 443). It says `hello`, sends envelopes the way
Slack does (`{"envelope_id", "type", "payload", "accepts_response_payload"}`) and records the app's acks."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
import time
from typing import Any

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class FakeSocketMode:
    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.acks: list[dict[str, Any]] = []
        self._conn: socket.socket | None = None
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/link/?ticket=fake"

    def __enter__(self) -> FakeSocketMode:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for sock in (self._conn, self._server):
            try:
                if sock is not None:
                    sock.close()
            except OSError:
                pass
        self._thread.join(timeout=5)

    def wait_connected(self, timeout: float = 10) -> None:
        assert self._connected.wait(timeout), "the app never opened the Socket Mode connection"

    def send_envelope(self, *, envelope_id: str, kind: str, payload: dict[str, Any]) -> None:
        self._send_text(json.dumps({"envelope_id": envelope_id, "type": kind, "payload": payload,
                                    "accepts_response_payload": kind != "events_api", "retry_attempt": 0,
                                    "retry_reason": ""}))

    def wait_ack(self, envelope_id: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for ack in self.acks:
                    if ack.get("envelope_id") == envelope_id:
                        return ack
            time.sleep(0.01)
        raise AssertionError(f"no ack for {envelope_id}; acks: {self.acks}")

    # ---------------------------------------------------------------------------------------- wire

    def _serve(self) -> None:
        try:
            conn, _ = self._server.accept()
        except OSError:
            return
        self._conn = conn
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                return
            request += chunk
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key"))
        accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest()).decode()
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        self._send_text(json.dumps({"type": "hello", "num_connections": 1,
                                    "connection_info": {"app_id": "A0DRBOT"}, "debug_info": {}}))
        self._connected.set()
        while not self._stop.is_set():
            try:
                opcode, data = self._read_frame(conn)
            except (OSError, ConnectionError):
                return
            if opcode == 0x1:
                with self._lock:
                    self.acks.append(json.loads(data.decode()))
            elif opcode == 0x9:
                self._send_frame(0xA, data)
            elif opcode == 0x8:
                return

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

    def _send_text(self, text: str) -> None:
        self._connected.wait(10) if threading.current_thread() is not self._thread else None
        self._send_frame(0x1, text.encode())

    def _send_frame(self, opcode: int, data: bytes) -> None:
        header = bytes([0x80 | opcode])
        if len(data) < 126:
            header += bytes([len(data)])
        elif len(data) < 65536:
            header += bytes([126]) + struct.pack("!H", len(data))
        else:
            header += bytes([127]) + struct.pack("!Q", len(data))
        assert self._conn is not None
        with self._lock:
            self._conn.sendall(header + data)
