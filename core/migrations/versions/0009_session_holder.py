"""session holder: which ingest process holds a live session

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("holder", sa.String(200), nullable=True))


def downgrade() -> None:
    op.drop_column("sessions", "holder")
