"""A broker address that accepts connections and never answers (a hung Redis, a dead proxy).

Refused connections fail at once; this one makes a client wait for its own timeouts, which is
what shows whether a request handler blocks the event loop while it waits.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class SilentBroker:
    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.url = f"redis://127.0.0.1:{self._sock.getsockname()[1]}/0"
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self._held.append(conn)  # never read, never answered

    def hang_up(self) -> None:
        """Close the held connections: waiting clients fail now instead of at their timeout."""
        for conn in self._held:
            conn.close()
        self._held.clear()

    def __enter__(self) -> SilentBroker:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.hang_up()
        self._sock.close()
