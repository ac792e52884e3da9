"""Models by URI: where each version's files live (`artifact_uri`) and their sha256 (`files`).

Rows registered before this revision keep NULL in both and load from `path` as before.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("artifact_uri", sa.Text(), nullable=True))
        batch.add_column(sa.Column("files", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("files")
        batch.drop_column("artifact_uri")
