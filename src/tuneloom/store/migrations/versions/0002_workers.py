"""Placement by capacity: the workers table, and each training run's requirement.

Existing runs get no requirement (needs_cuda false, memory unknown): any worker may claim them, as before.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("gpu_memory_mb", sa.Integer(), nullable=False),
        sa.Column("cpu_memory_mb", sa.Integer(), nullable=False),
        sa.Column("lease_s", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.add_column("model_versions", sa.Column("needs_cuda", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("model_versions", sa.Column("needs_memory_mb", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("needs_memory_mb")
        batch.drop_column("needs_cuda")
    op.drop_table("workers")
