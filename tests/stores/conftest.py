"""Fixtures of the store tests: `fake_redis`, a TCP server speaking just enough of Redis's protocol to misbehave like a real one: it
answers the connection handshake and then every command with one fixed reply (an error such
as -OOM, or +OK), or answers nothing at all."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest


def _command(buffer: bytes) -> tuple[list[bytes], bytes] | None:
    """The first complete RESP command (an array of bulk strings) and the rest."""
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    count, position, parts = int(buffer[1:end]), end + 2, []
    for _ in range(count):
        end = buffer.find(b"\r\n", position)
        if end < 0:
            return None
        start = end + 2
        length = int(buffer[position + 1 : end])
        if len(buffer) < start + length + 2:
            return None
        parts.append(buffer[start : start + length])
        position = start + length + 2
    return parts, buffer[position:]


class FakeRedis:
    def __init__(self) -> None:
        self.reply: bytes | None = None  # None: read commands, never answer
        self.commands: list[str] = []
        self.connections = 0
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._server.getsockname()[1]}/0"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            self._sockets.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        buffer = b""
        with connection:
            while True:
                try:
                    chunk = connection.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while (parsed := _command(buffer)) is not None:
                    command, buffer = parsed
                    name = command[0].decode().upper()
                    self.commands.append(name)
                    if self.reply is None:
                        continue
                    if name == "HELLO":  # redis-py >= 6 asks for RESP3 first
                        connection.sendall(b"%1\r\n+proto\r\n:3\r\n")
                    elif name in ("CLIENT", "SELECT"):
                        connection.sendall(b"+OK\r\n")
                    else:
                        connection.sendall(self.reply)

    def data_commands(self) -> list[str]:
        """Commands other than the client's connection handshake."""
        return [c for c in self.commands if c not in ("CLIENT", "HELLO", "SELECT")]

    def close(self) -> None:
        for sock in [*self._sockets, self._server]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def fake_redis():
    server = FakeRedis()
    yield server
    server.close()
