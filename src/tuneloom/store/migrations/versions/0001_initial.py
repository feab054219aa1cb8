"""Initial schema: apps, keys, datasets and their inputs and versions, models, training runs, metrics, logs.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apps")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=True),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_api_keys_app_id_apps"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    op.create_index(op.f("ix_api_keys_app_id"), "api_keys", ["app_id"], unique=False)
    op.create_table(
        "datasets",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_datasets_app_id_apps"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_datasets")),
        sa.UniqueConstraint("app_id", "id", name="uq_datasets_app_id_id"),
    )
    op.create_table(
        "models",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("model_type_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_models_app_id_apps"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_models")),
        sa.UniqueConstraint("app_id", "id", name="uq_models_app_id_id"),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("dataset_pk", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("example_count", sa.Integer(), nullable=True),
        sa.Column("stats", sa.JSON(), nullable=True),
        sa.Column("artifact_path", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_pk"], ["datasets.pk"], name=op.f("fk_dataset_versions_dataset_pk_datasets"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_versions")),
    )
    op.create_index(op.f("ix_dataset_versions_dataset_pk"), "dataset_versions", ["dataset_pk"], unique=False)
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("dataset_pk", sa.Integer(), nullable=False),
        sa.Column("source_file", sa.String(length=255), nullable=False),
        sa.Column("format", sa.String(length=32), nullable=False),
        sa.Column("valid_rows", sa.Integer(), nullable=False),
        sa.Column("invalid_rows", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_pk"], ["datasets.pk"], name=op.f("fk_uploads_dataset_pk_datasets"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
    )
    op.create_index(op.f("ix_uploads_dataset_pk"), "uploads", ["dataset_pk"], unique=False)
    op.create_table(
        "inputs",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset_pk", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.String(length=64), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("completion", sa.Text(), nullable=False),
        sa.Column("source_file", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_pk"], ["datasets.pk"], name=op.f("fk_inputs_dataset_pk_datasets"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["upload_id"], ["uploads.id"], name=op.f("fk_inputs_upload_id_uploads"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_inputs")),
        sa.UniqueConstraint("dataset_pk", "seq", name="uq_inputs_dataset_pk_seq"),
    )
    op.create_index(op.f("ix_inputs_upload_id"), "inputs", ["upload_id"], unique=False)
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("model_pk", sa.Integer(), nullable=False),
        sa.Column("dataset_version_id", sa.String(length=64), nullable=True),
        sa.Column("resume_from", sa.String(length=64), nullable=True),
        sa.Column("template", sa.String(length=128), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("eta_s", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("artifact_path", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_model_versions_dataset_version_id_dataset_versions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_pk"], ["models.pk"], name=op.f("fk_model_versions_model_pk_models"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["resume_from"],
            ["model_versions.id"],
            name=op.f("fk_model_versions_resume_from_model_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
    )
    op.create_index(
        op.f("ix_model_versions_dataset_version_id"), "model_versions", ["dataset_version_id"], unique=False
    )
    op.create_index(op.f("ix_model_versions_model_pk"), "model_versions", ["model_pk"], unique=False)
    op.create_index("ix_model_versions_queue", "model_versions", ["status", "created_at", "id"], unique=False)
    op.create_table(
        "log_lines",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_version_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_log_lines_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_log_lines")),
        sa.UniqueConstraint("model_version_id", "seq", name="uq_log_lines_model_version_id_seq"),
    )
    op.create_table(
        "metric_points",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_version_id", sa.String(length=64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("eval_loss", sa.Float(), nullable=True),
        sa.Column("learning_rate", sa.Float(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_metric_points_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_metric_points")),
    )
    op.create_index(op.f("ix_metric_points_model_version_id"), "metric_points", ["model_version_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_metric_points_model_version_id"), table_name="metric_points")
    op.drop_table("metric_points")
    op.drop_table("log_lines")
    op.drop_index("ix_model_versions_queue", table_name="model_versions")
    op.drop_index(op.f("ix_model_versions_model_pk"), table_name="model_versions")
    op.drop_index(op.f("ix_model_versions_dataset_version_id"), table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_index(op.f("ix_inputs_upload_id"), table_name="inputs")
    op.drop_table("inputs")
    op.drop_index(op.f("ix_uploads_dataset_pk"), table_name="uploads")
    op.drop_table("uploads")
    op.drop_index(op.f("ix_dataset_versions_dataset_pk"), table_name="dataset_versions")
    op.drop_table("dataset_versions")
    op.drop_table("models")
    op.drop_table("datasets")
    op.drop_index(op.f("ix_api_keys_app_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("apps")
