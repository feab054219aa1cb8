"""A generation node keeps its row in the database fresh while it serves (`serve --advertise-url`).

The row carries the URL other servers reach it at and a random token they must present; it is
written once before the server starts (a database that cannot be reached stops `serve` at once),
then every third of the lease, and removed on a clean stop.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from urllib.parse import urlsplit

from tuneloom.errors import SettingsError
from tuneloom.server.heartbeat import Heartbeat
from tuneloom.store.db import Database
from tuneloom.store.nodes import advertise, withdraw

log = logging.getLogger("tuneloom.server")
NODE_LEASE_S = 15.0  # silent for longer than this: servers stop sending to the node


def check_advertise_url(url: str) -> str:
    """The URL without a trailing slash; a clear error for one other servers could not call."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query:
        raise SettingsError(
            f"--advertise-url must be the http(s) address other servers reach this one at, "
            f"such as http://gpu-1.internal:8000, got {url!r}",
            key="advertise_url",
        )
    return url.rstrip("/")


class NodeAdvert:
    """This server's registration as a generation node, refreshed every third of its lease."""

    def __init__(self, db: Database, url: str, backend: str, lease_s: float = NODE_LEASE_S):
        """`url` as `check_advertise_url` returns it (`serve` checks it before anything starts)."""
        self.db, self.url, self.backend, self.lease_s = db, url, backend, lease_s
        self.node_id = f"{socket.gethostname()}:{os.getpid()}"
        self.token = secrets.token_urlsafe(32)
        self._heartbeat = Heartbeat(self._advertise, lease_s / 3, "generation-node")

    def start(self) -> None:
        self._advertise()
        self._heartbeat.start()

    def stop(self) -> None:
        self._heartbeat.stop()
        try:
            withdraw(self.db, self.node_id)
        except Exception as err:  # the lease runs out by itself
            log.warning("could not withdraw generation node %s: %s", self.node_id, err)

    def _advertise(self) -> None:
        advertise(self.db, self.node_id, self.url, self.backend, self.token, self.lease_s)
