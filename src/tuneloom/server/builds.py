"""This server's dataset-version builds kept alive, and abandoned builds failed, while it serves.

Every `BUILD_BEAT_S` one thread refreshes the heartbeat of the builds this server runs now, then
fails the builds nobody runs any more (`store.recovery.fail_abandoned_versions`): a crashed server's
builds end within `BUILD_LEASE_S` even when it never restarts, and none waits for the next start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tuneloom.server.heartbeat import Heartbeat
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.builders import BUILD_BEAT_S, THIS_PROCESS
from tuneloom.store.dataset_versions import renew_builds
from tuneloom.store.db import Database
from tuneloom.store.recovery import fail_abandoned_versions

log = logging.getLogger("tuneloom.server")


class BuildLeases:
    def __init__(
        self, db: Database, artifacts: Artifacts, builder: str = THIS_PROCESS, beat_s: float = BUILD_BEAT_S
    ) -> None:
        self.db, self.artifacts, self.builder = db, artifacts, builder
        self._building: set[str] = set()
        self._lock = threading.Lock()
        self._heartbeat = Heartbeat(self.beat, beat_s, "dataset-version-builds")

    def start(self) -> None:
        self._heartbeat.start()

    def stop(self) -> None:
        self._heartbeat.stop()

    @contextmanager
    def building(self, version_id: str) -> Iterator[str]:
        """Keep the build of `version_id` alive while the block runs; gives the builder id to build as."""
        with self._lock:
            self._building.add(version_id)
        try:
            yield self.builder
        finally:
            with self._lock:
                self._building.discard(version_id)

    def beat(self) -> None:
        with self._lock:
            building = list(self._building)
        renew_builds(self.db, self.builder, building)
        failed = fail_abandoned_versions(self.db, self.artifacts, me=self.builder)
        if failed:
            log.warning("dataset versions abandoned by a stopped server, marked FAILURE: %s", ", ".join(failed))
