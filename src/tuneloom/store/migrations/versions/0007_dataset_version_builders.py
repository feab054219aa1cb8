"""Dataset-version builds are owned: the building server and its heartbeat (`tuneloom.store.builders`).

Versions already unfinished get neither; with no heartbeat they count as stale builds, which the
next start (or any server's periodic check) fails as before.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("dataset_versions", sa.Column("builder", sa.String(length=255), nullable=True))
    op.add_column("dataset_versions", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("builder")
