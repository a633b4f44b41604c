"""continuous presentation: a stream URL's sessions on one timeline, with one target duration

Streams keep their current live presentation (first sequence number, fixed target duration,
when it ended); sessions say which presentation they belong to and their recording's target
duration, and when its connection's media first reached the timeline; a segment row can be
an outage gap on the timeline. Each stream's latest session becomes its presentation, ended
unless the session is live.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("streams", sa.Column("presentation_sequence", sa.Integer(), nullable=True))
    op.add_column("streams", sa.Column("target_duration", sa.Integer(), nullable=True))
    op.add_column(
        "streams", sa.Column("presentation_ended_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("sessions", sa.Column("presentation_sequence", sa.Integer(), nullable=True))
    op.add_column("sessions", sa.Column("target_duration", sa.Integer(), nullable=True))
    op.add_column("sessions", sa.Column("fed_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE sessions SET fed_at = heartbeat_at WHERE status = 'live'")
    op.drop_constraint("segment_status", "segments", type_="check")
    op.create_check_constraint("segment_status", "segments", "status IN ('ready', 'failed', 'gap')")
    op.execute(
        """
        UPDATE sessions AS s SET presentation_sequence = coalesce((
            SELECT min(seg.sequence) FROM segments seg
            JOIN renditions r ON seg.rendition_id = r.id
            WHERE r.session_id = s.id AND r.name = 'source'), 0)
        WHERE s.id = (SELECT latest.id FROM sessions latest
                      WHERE latest.stream_id = s.stream_id
                      ORDER BY latest.started_at DESC LIMIT 1)
        """
    )
    op.execute(
        """
        UPDATE streams AS st SET presentation_sequence = s.presentation_sequence,
            presentation_ended_at = CASE WHEN s.status = 'live' THEN NULL
                                         ELSE coalesce(s.ended_at, now()) END
        FROM sessions s
        WHERE s.stream_id = st.id AND s.presentation_sequence IS NOT NULL
        """
    )


def downgrade() -> None:
    op.execute("DELETE FROM segments WHERE status = 'gap'")
    op.drop_constraint("segment_status", "segments", type_="check")
    op.create_check_constraint("segment_status", "segments", "status IN ('ready', 'failed')")
    op.drop_column("sessions", "fed_at")
    op.drop_column("sessions", "target_duration")
    op.drop_column("sessions", "presentation_sequence")
    op.drop_column("streams", "presentation_ended_at")
    op.drop_column("streams", "target_duration")
    op.drop_column("streams", "presentation_sequence")
