"""How many GPUs each training run takes on a worker with GPUs (one per process), matched when claiming.

Runs that are queued or training get theirs from their stored `distributed` setting, so a queued
four-process run waits for a slot with four GPUs from the moment the new schema is in; every other
run counts as one.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_RUNS = sa.table(
    "model_versions",
    sa.column("id", sa.String()),
    sa.column("status", sa.String()),
    sa.column("settings", sa.JSON()),
    sa.column("needs_gpu_count", sa.Integer()),
)
_UNFINISHED = ("MODEL_QUEUED_FOR_TRAINING", "MODEL_TRAINING")


def upgrade() -> None:
    op.add_column("model_versions", sa.Column("needs_gpu_count", sa.Integer(), server_default="1", nullable=False))
    bind = op.get_bind()
    unfinished = bind.execute(sa.select(_RUNS.c.id, _RUNS.c.settings).where(_RUNS.c.status.in_(_UNFINISHED)))
    for run_id, settings in unfinished.all():
        gpus = _processes_per_machine(settings)
        if gpus > 1:
            bind.execute(sa.update(_RUNS).where(_RUNS.c.id == run_id).values(needs_gpu_count=gpus))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("needs_gpu_count")


def _processes_per_machine(settings: Any) -> int:
    """As `settings_distributed.processes_per_machine` did when this was written (a migration must not drift)."""
    distributed = settings.get("distributed") if isinstance(settings, dict) else None
    if not isinstance(distributed, dict):
        return 1
    try:
        return max(1, int(distributed.get("num_processes", 1)) // max(1, int(distributed.get("num_machines", 1))))
    except (TypeError, ValueError):
        return 1
