"""Orders, the KCI outbox and the event log.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kci_order",
        sa.Column("order_id", sa.String(length=200), primary_key=True),
        sa.Column("order_type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("return_stack", sa.Text(), nullable=False),
        sa.Column("requests", sa.Text(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("next_sequence", sa.Integer(), nullable=False),
        sa.Column("last_issued_on", sa.String(length=32), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.String(length=200), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "kci_outbox",
        sa.Column("kci_id", sa.String(length=36), primary_key=True),
        sa.Column(
            "order_id", sa.String(length=200), sa.ForeignKey("kci_order.order_id"), nullable=False
        ),
        sa.Column("sequence_number", sa.Integer(), nullable=False),
        sa.Column("reason_code", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("issued_on", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("delivery_state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("order_id", "sequence_number", name="uq_kci_outbox_order_sequence"),
    )
    op.create_index("ix_kci_outbox_due", "kci_outbox", ["delivery_state", "next_attempt_at_ms"])
    op.create_table(
        "kci_event",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "order_id", sa.String(length=200), sa.ForeignKey("kci_order.order_id"), nullable=False
        ),
        sa.Column("event_id", sa.String(length=200), nullable=True),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("status_before", sa.String(length=32), nullable=False),
        sa.Column("status_after", sa.String(length=32), nullable=False),
        sa.Column("kci_ids", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("applied_at_ms", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("order_id", "event_id", name="uq_kci_event_order_event_id"),
    )
    op.create_index("ix_kci_event_order", "kci_event", ["order_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_kci_event_order", table_name="kci_event")
    op.drop_table("kci_event")
    op.drop_index("ix_kci_outbox_due", table_name="kci_outbox")
    op.drop_table("kci_outbox")
    op.drop_table("kci_order")
