"""Retention: when a job's outputs were deleted, jobs writing to the user's own bucket, and the
leases schedulers take turns with (one reaper at a time).

Only columns are added (no table is copied): SQLite would cascade a copy's DROP TABLE jobs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from scheduler.jobs.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("outputs_deleted_at", UtcDateTime, nullable=True))
    op.add_column("jobs", sa.Column("destination_url", sa.Text, nullable=True))
    op.create_index("ix_jobs_data_expiration", "jobs", ["data_expiration"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_jobs_data_expiration", "jobs")
    op.drop_column("jobs", "destination_url")
    op.drop_column("jobs", "outputs_deleted_at")
