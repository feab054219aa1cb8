"""Generation nodes: servers that generate for other servers, found through the shared database.

A `tuneloom serve --advertise-url URL` (typically on a GPU machine, with the vLLM backend) upserts
its row here when it starts and every few seconds after (`advertise`), with a random token that
callers must present. A `tuneloom serve --backend remote` reads the live rows (`live_nodes`) and
sends each generation to one of them. A node that stops cleanly removes its row (`withdraw`); one
that dies stops counting once its lease passes without a heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from tuneloom.store.db import Database
from tuneloom.store.models import GenerationNode, utcnow

FORGET_AFTER = timedelta(days=1)  # rows of nodes gone this long are deleted


@dataclass(frozen=True)
class NodeInfo:
    id: str
    url: str
    backend: str
    token: str


def advertise(
    db: Database, node_id: str, url: str, backend: str, token: str, lease_s: float, *, now: datetime | None = None
) -> None:
    """Register or refresh a node (the first call registers it), and forget nodes gone for a day."""
    now = now or utcnow()
    with db.write() as session:
        row = session.get(GenerationNode, node_id)
        if row is None:
            row = GenerationNode(id=node_id, started_at=now)
            session.add(row)
        row.url, row.backend, row.token, row.lease_s, row.heartbeat_at = url, backend, token, lease_s, now
        session.execute(delete(GenerationNode).where(GenerationNode.heartbeat_at < now - FORGET_AFTER))


def withdraw(db: Database, node_id: str) -> None:
    with db.write() as session:
        session.execute(delete(GenerationNode).where(GenerationNode.id == node_id))


def live_nodes(db: Database, *, now: datetime | None = None) -> list[NodeInfo]:
    """Nodes whose last heartbeat is within their lease, in id order (a read only: /healthz and every
    remote server call it often; the nodes' own heartbeats forget long-dead rows)."""
    now = now or utcnow()
    with db.read() as session:
        rows = session.scalars(select(GenerationNode).order_by(GenerationNode.id)).all()
        return [
            NodeInfo(row.id, row.url, row.backend, row.token)
            for row in rows
            if row.heartbeat_at + timedelta(seconds=row.lease_s) >= now
        ]
