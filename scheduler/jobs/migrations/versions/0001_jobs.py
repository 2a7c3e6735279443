"""Jobs, their labels, work items, output links and errors.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from scheduler.jobs.models import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("username", sa.String(255), nullable=False, index=True),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("custom_message", sa.Text),
        sa.Column("progress", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False, index=True),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("data_expiration", UtcDateTime, nullable=False),
        sa.Column("request_url", sa.Text, nullable=False),
        sa.Column("num_input_granules", sa.Integer, nullable=False),
        sa.Column("ignore_errors", sa.Boolean, nullable=False),
        sa.Column("data_request", sa.LargeBinary, nullable=False),
        sa.Column("service_match", sa.LargeBinary),
    )
    op.create_table(
        "job_labels",
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("label", sa.String(255), primary_key=True, index=True),
    )
    op.create_table(
        "work_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.job_id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("granule", sa.LargeBinary, nullable=False),
        sa.Column("granule_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime, nullable=False),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_expires_at", UtcDateTime),
    )
    op.create_index("ix_work_items_lease", "work_items", ["status", "next_attempt_at"])
    op.create_table(
        "job_links",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.job_id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("href", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("bbox", sa.JSON),
        sa.Column("time_start", UtcDateTime),
        sa.Column("time_end", UtcDateTime),
        sa.UniqueConstraint("job_id", "href", name="uq_job_links_href"),
    )
    op.create_table(
        "job_errors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.job_id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("job_errors", "job_links", "work_items", "job_labels", "jobs"):
        op.drop_table(table)
