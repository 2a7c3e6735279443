"""Alembic environment: migrations run on the connection the job store hands over (see store.migrate)."""

from alembic import context

from scheduler.jobs.models import Base

connection = context.config.attributes["connection"]
# render_as_batch lets later migrations alter tables on SQLite too.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
