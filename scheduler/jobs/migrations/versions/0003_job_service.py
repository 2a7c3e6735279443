"""The registry service a job's items run on, so that queue depth can be reported by service.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("service", sa.String(255), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "service")
