"""A TCP relay between a client and a real server, for failover tests (test support, not a model).

It forwards bytes both ways unchanged and lets a test act at a precise moment: `on_answer` is
called once, when the first streamed answer event ("data:") comes back from the server, i.e.
while the server is in the middle of generating. The tests use it to SIGKILL or SIGSTOP the real
server right then. It also keeps every request body that went through (`requests`).
"""
from __future__ import annotations

import socket
import threading
from typing import Callable


class Relay:
    def __init__(self, upstream_port: int, on_answer: Callable[[], None] | None = None) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.on_answer = on_answer
        self.requests: list[bytes] = []
        self._fired = False
        self._lock = threading.Lock()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, name="relay-accept", daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def arm(self, on_answer: Callable[[], None]) -> None:
        """Call `on_answer` at the next answer event."""
        with self._lock:
            self.on_answer, self._fired = on_answer, False

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()  # the server is gone: refuse like it would
                continue
            server.settimeout(None)
            for src, dst, up in ((client, server, True), (server, client, False)):
                t = threading.Thread(target=self._pipe, args=(src, dst, up), daemon=True)
                t.start()
                self._threads.append(t)

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream:
                    with self._lock:
                        self.requests.append(data)
                else:
                    fire = None
                    with self._lock:
                        if not self._fired and self.on_answer is not None and b"data:" in data:
                            self._fired, fire = True, self.on_answer
                    if fire is not None:
                        fire()  # the server is mid-answer now
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
