"""Delivery leases: which dispatcher is delivering an order's KCIs, until when.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kci_delivery_lease",
        sa.Column(
            "order_id",
            sa.String(length=200),
            sa.ForeignKey("kci_order.order_id"),
            primary_key=True,
        ),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("until_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "ix_kci_outbox_order_state", "kci_outbox", ["order_id", "delivery_state", "sequence_number"]
    )


def downgrade() -> None:
    op.drop_index("ix_kci_outbox_order_state", table_name="kci_outbox")
    op.drop_table("kci_delivery_lease")
