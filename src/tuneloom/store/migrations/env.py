"""Alembic runs this with the caller's connection in `config.attributes` (see `upgrade_database`)."""

from __future__ import annotations

from alembic import context

from tuneloom.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through tuneloom.store.migrations.upgrade_to_head(url)")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    transactional_ddl=True,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
