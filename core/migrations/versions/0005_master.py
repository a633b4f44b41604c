"""master: each rendition's place in the master, and running totals of its media

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("renditions", sa.Column("position", sa.Integer(), nullable=True))
    op.add_column(
        "renditions",
        sa.Column("media_bytes", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.add_column(
        "renditions",
        sa.Column("media_seconds", sa.Float(), nullable=False, server_default="0"),
    )
    # Sessions recorded before: their totals so far, so averages carry on from them.
    op.execute(
        """
        UPDATE renditions SET media_bytes = totals.bytes, media_seconds = totals.seconds
        FROM (
            SELECT rendition_id, sum(size_bytes) AS bytes, sum(duration) AS seconds
            FROM segments WHERE status = 'ready' GROUP BY rendition_id
        ) AS totals
        WHERE renditions.id = totals.rendition_id
        """
    )


def downgrade() -> None:
    op.drop_column("renditions", "media_seconds")
    op.drop_column("renditions", "media_bytes")
    op.drop_column("renditions", "position")
