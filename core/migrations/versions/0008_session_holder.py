"""session holder: which ingest process holds a live session

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("holder", sa.String(200), nullable=True))


def downgrade() -> None:
    op.drop_column("sessions", "holder")
