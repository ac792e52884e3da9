"""The labelling queue: served predictions an episode sends to annotators (`monitoring.labeling`).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "labeling_tasks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("episode_id", sa.String(length=32), nullable=True),
        sa.Column("prediction_id", sa.String(length=32), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("prediction_id", name="uq_labeling_tasks_prediction"),
    )
    op.create_index(op.f("ix_labeling_tasks_model_name"), "labeling_tasks", ["model_name"], unique=False)
    op.create_index(op.f("ix_labeling_tasks_episode_id"), "labeling_tasks", ["episode_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_labeling_tasks_episode_id"), table_name="labeling_tasks")
    op.drop_index(op.f("ix_labeling_tasks_model_name"), table_name="labeling_tasks")
    op.drop_table("labeling_tasks")
