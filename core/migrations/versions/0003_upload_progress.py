"""upload progress: the probed duration, the packaged source (and its chunks), when
processing ended

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("uploads", sa.Column("duration_seconds", sa.Float(), nullable=True))
    op.add_column("uploads", sa.Column("source_segments", sa.Integer(), nullable=True))
    op.add_column("uploads", sa.Column("chunk_count", sa.Integer(), nullable=True))
    op.add_column("uploads", sa.Column("chunks", sa.JSON(), nullable=True))
    op.add_column("uploads", sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_uploads_session_id"), "uploads", ["session_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_uploads_session_id"), table_name="uploads")
    op.drop_column("uploads", "finished_at")
    op.drop_column("uploads", "chunks")
    op.drop_column("uploads", "chunk_count")
    op.drop_column("uploads", "source_segments")
    op.drop_column("uploads", "duration_seconds")
