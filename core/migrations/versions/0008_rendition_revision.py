"""rendition revision: a counter every write of a rendition's segments raises

A rendered playlist is a function of segment rows; the API keeps rendered playlists under
the revisions of the renditions they read (`packager.playlist_versions`), so any process
can tell with one indexed read whether a rendering is still the one a fresh render gives.
The triggers are per statement and read transition tables, so a cascade that deletes a
session's 100k segments raises each rendition once instead of queuing a row event each.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# (trigger event, transition tables, the renditions those rows belong to)
TRIGGERS = (
    ("insert", "NEW TABLE AS added", "SELECT rendition_id FROM added"),
    ("delete", "OLD TABLE AS removed", "SELECT rendition_id FROM removed"),
    (
        "update",
        "OLD TABLE AS removed NEW TABLE AS added",
        "SELECT rendition_id FROM removed UNION SELECT rendition_id FROM added",
    ),
)


def upgrade() -> None:
    op.add_column(
        "renditions",
        sa.Column("revision", sa.BigInteger(), nullable=False, server_default="0"),
    )
    for event, tables, changed in TRIGGERS:
        op.execute(
            f"""
            CREATE FUNCTION raise_rendition_revision_on_{event}() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE renditions SET revision = revision + 1 WHERE id IN ({changed});
                RETURN NULL;
            END $$
            """
        )
        op.execute(
            f"""
            CREATE TRIGGER segments_{event}_raise_revision AFTER {event.upper()} ON segments
            REFERENCING {tables} FOR EACH STATEMENT
            EXECUTE FUNCTION raise_rendition_revision_on_{event}()
            """
        )


def downgrade() -> None:
    for event, _, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER segments_{event}_raise_revision ON segments")
        op.execute(f"DROP FUNCTION raise_rendition_revision_on_{event}()")
    op.drop_column("renditions", "revision")
