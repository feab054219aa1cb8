"""The per-key cap on running generations, counted in the database so that it holds across servers.

Several API servers may share one PostgreSQL database (behind a load balancer, or one per machine
with `--backend remote`); a cap counted in each server's memory would let a key run the cap times
the number of servers. Here each running generation holds a row `(key, number)` with `number` below
the cap: the primary key makes two servers' concurrent takes of one number impossible (the second
insert fails and looks again), so at most `limit` rows can exist for a key whatever the timing.

A row carries its server (`holder`) and a lease the server renews while the generation runs
(`renew`); rows of a server that died stop counting once their lease passes.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from tuneloom.store.db import Database
from tuneloom.store.models import GenerationSlot, utcnow

SLOT_LEASE_S = 15.0  # a server silent for longer than this no longer holds its slots


def take(
    db: Database, key_id: str, limit: int, holder: str, lease_s: float = SLOT_LEASE_S, *, now: datetime | None = None
) -> int | None:
    """The number of a slot `holder` now holds for the key, or None when the key has `limit` running."""
    for _ in range(limit + 1):  # each lost race means one more number taken: at most `limit` of them
        moment = now or utcnow()
        try:
            with db.write() as session:
                expired = (GenerationSlot.key_id == key_id) & (GenerationSlot.expires_at < moment)
                session.execute(delete(GenerationSlot).where(expired))
                numbers = select(GenerationSlot.number).where(GenerationSlot.key_id == key_id)
                taken = set(session.scalars(numbers))
                free = next((n for n in range(limit) if n not in taken), None)
                if free is None:
                    return None
                expires_at = moment + timedelta(seconds=lease_s)
                session.add(GenerationSlot(key_id=key_id, number=free, holder=holder, expires_at=expires_at))
            return free
        except IntegrityError:  # another server inserted that number since the read: look again
            continue
    return None


def release(db: Database, key_id: str, number: int, holder: str) -> None:
    with db.write() as session:
        mine = (GenerationSlot.key_id == key_id) & (GenerationSlot.number == number)
        session.execute(delete(GenerationSlot).where(mine & (GenerationSlot.holder == holder)))


def renew(
    db: Database,
    holder: str,
    held: Collection[tuple[str, int]],
    lease_s: float = SLOT_LEASE_S,
    *,
    now: datetime | None = None,
) -> None:
    """Extend the lease of the slots `holder` still runs (`held`); one it failed to release then runs out."""
    if not held:
        return
    expires_at = (now or utcnow()) + timedelta(seconds=lease_s)
    which = (GenerationSlot.holder == holder) & tuple_(GenerationSlot.key_id, GenerationSlot.number).in_(list(held))
    with db.write() as session:
        session.execute(update(GenerationSlot).where(which).values(expires_at=expires_at))


def release_all(db: Database, holder: str) -> None:
    """Free every slot of a server that stops (its generations stopped with it)."""
    with db.write() as session:
        session.execute(delete(GenerationSlot).where(GenerationSlot.holder == holder))


def running(db: Database, key_id: str, *, now: datetime | None = None) -> int:
    """How many generations the key has running on all servers (for tests and diagnostics)."""
    alive = (GenerationSlot.key_id == key_id) & (GenerationSlot.expires_at >= (now or utcnow()))
    with db.read() as session:
        return len(session.scalars(select(GenerationSlot.number).where(alive)).all())
