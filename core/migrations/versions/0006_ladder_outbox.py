"""ladder outbox: each closed source segment's ladder work as a row, and the rung segments
that missed their deadline

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "segments",
        sa.Column("missed_deadline", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "ladder_outbox",
        sa.Column(
            "segment_id",
            sa.BigInteger(),
            sa.ForeignKey("segments.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "session_id",
            sa.Uuid(),
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sends", sa.Integer(), nullable=False),
        sa.Column("lease_task", sa.String(64), nullable=True),
        sa.Column("lease_worker", sa.String(200), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gapped_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("session_id", "sequence"),
    )


def downgrade() -> None:
    op.drop_table("ladder_outbox")
    op.drop_column("segments", "missed_deadline")
