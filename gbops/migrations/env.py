"""Alembic environment for gbops (configured programmatically, see gbops.migrate.alembic_config).

Three ways in:

* ``config.attributes["connection"]``: a sync Connection handed over by gbops.migrate.migrate
  (from ``AsyncConnection.run_sync``); the caller owns the transaction.
* ``sqlalchemy.url`` main option: an async engine is created here (development commands
  such as ``alembic.command.revision(..., autogenerate=True)``).
* offline mode (``--sql``): SQL is rendered for the URL's dialect.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from sqlalchemy.engine import Connection

from gbcore.db import Base, UtcDateTime, make_engine
from gbops.migrate import load_models

load_models()
target_metadata = Base.metadata
config = context.config


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Render gbcore.db.UtcDateTime as plain SQLAlchemy types: migrations must not import
    application code."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        if obj.precision is None:
            return "sa.DateTime(timezone=True)"
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return (
            "sa.DateTime(timezone=True).with_variant("
            f"postgresql.TIMESTAMP(timezone=True, precision={obj.precision}), 'postgresql')"
        )
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: let autogenerate emit batch operations.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )


def _run_on_connection(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_url(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run_on_connection)
            await conn.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on_connection(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("gbops migrations need a connection or a sqlalchemy.url")
    asyncio.run(_run_with_url(url))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
