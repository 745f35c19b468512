"""jobs and api_keys

Revision ID: 0001
Revises:
Create Date: 2026-11-28

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                *JOB_STATES, name="job_state", native_enum=False, create_constraint=True, length=16
            ),
            nullable=False,
        ),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("started_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("finished_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("worker_id", sa.String(length=255), nullable=True),
        sa.Column("heartbeat_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("study_name", sa.String(length=255), nullable=False),
        sa.Column("study_ready", sa.Boolean(), nullable=False),
        sa.Column("trial_slots", sa.Integer(), nullable=False),
        sa.Column("trial_budget", sa.Integer(), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("artifacts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("owner", "idempotency_key", name=op.f("uq_jobs_owner_idempotency_key")),
    )
    op.create_index(op.f("ix_jobs_state_created_at"), "jobs", ["state", "created_at"])
    op.create_index(op.f("ix_jobs_owner_created_at_id"), "jobs", ["owner", "created_at", "id"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", app.models.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index(op.f("ix_api_keys_owner"), "api_keys", ["owner"])


def downgrade() -> None:
    op.drop_index(op.f("ix_api_keys_owner"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index(op.f("ix_jobs_owner_created_at_id"), table_name="jobs")
    op.drop_index(op.f("ix_jobs_state_created_at"), table_name="jobs")
    op.drop_table("jobs")
