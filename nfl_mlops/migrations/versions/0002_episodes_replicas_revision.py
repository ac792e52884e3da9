"""Drift episodes, replica heartbeats, and compare-and-set rollouts (one active per model and environment).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    op.create_table(
        "drift_episodes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("arm", sa.String(length=20), nullable=False),
        sa.Column("open_key", sa.String(length=250), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_reason", sa.Text(), nullable=True),
        sa.Column("first_run_id", sa.String(length=32), nullable=True),
        sa.Column("last_run_id", sa.String(length=32), nullable=True),
        sa.Column("n_alarms", sa.Integer(), nullable=False),
        sa.Column("retraining_job_id", sa.String(length=32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retrained_version", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_key"),
    )
    op.create_index(op.f("ix_drift_episodes_model_name"), "drift_episodes", ["model_name"], unique=False)
    op.create_table(
        "serving_replicas",
        sa.Column("replica_id", sa.String(length=100), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("environment", sa.String(length=50), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rollout_id", sa.String(length=32), nullable=True),
        sa.Column("arms", sa.JSON(), nullable=False),
        sa.Column("target_rollout_id", sa.String(length=32), nullable=True),
        sa.Column("loaded_versions", sa.JSON(), nullable=False),
        sa.Column("load_errors", sa.JSON(), nullable=False),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.Column("stopping", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("replica_id"),
    )
    op.create_index(
        "ix_serving_replicas_model_seen",
        "serving_replicas",
        ["model_name", "environment", "last_seen"],
        unique=False,
    )
    # existing rollouts start at revision 0
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))
    # Before the index, at most one active rollout per model and environment: a race of the old code could
    # leave two; the newest stays active, the others become superseded (as a new activation does).
    rollouts = sa.table(
        "rollouts",
        sa.column("id", sa.String),
        sa.column("model_name", sa.String),
        sa.column("environment", sa.String),
        sa.column("status", sa.String),
        sa.column("created_at", sa.DateTime),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(rollouts.c.id, rollouts.c.model_name, rollouts.c.environment)
        .where(rollouts.c.status == "active")
        .order_by(rollouts.c.created_at.desc())
    ).all()
    seen: set[tuple[str, str]] = set()
    for rid, model, env in rows:
        if (model, env) in seen:
            conn.execute(sa.update(rollouts).where(rollouts.c.id == rid).values(status="superseded"))
        seen.add((model, env))
    op.create_index(
        "uq_rollouts_one_active",
        "rollouts",
        ["model_name", "environment"],
        unique=True,
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("uq_rollouts_one_active", table_name="rollouts")
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_column("revision")
    op.drop_index("ix_serving_replicas_model_seen", table_name="serving_replicas")
    op.drop_table("serving_replicas")
    op.drop_index(op.f("ix_drift_episodes_model_name"), table_name="drift_episodes")
    op.drop_table("drift_episodes")
