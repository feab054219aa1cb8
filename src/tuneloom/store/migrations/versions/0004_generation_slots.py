"""Generation slots: the per-key cap on running generations, counted across servers sharing the database.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "generation_slots",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_generation_slots_key_id_api_keys"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("key_id", "number", name=op.f("pk_generation_slots")),
    )
    op.create_index(op.f("ix_generation_slots_holder"), "generation_slots", ["holder"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_generation_slots_holder"), table_name="generation_slots")
    op.drop_table("generation_slots")
