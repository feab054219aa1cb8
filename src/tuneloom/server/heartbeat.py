"""A daemon thread that repeats one database write while the server runs (node adverts, slot leases).

A failed beat is logged and tried again at the next one: a database outage must not stop serving,
and the lease the beat keeps alive is longer than a few missed beats.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("tuneloom.server")


class Heartbeat:
    def __init__(self, beat: Callable[[], None], interval_s: float, name: str) -> None:
        self.beat, self.interval_s, self.name = beat, interval_s, name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tuneloom-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except Exception as err:
                log.warning("%s heartbeat failed: %s", self.name, err)
