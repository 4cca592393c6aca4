"""Delivery as a service: a fencing token on every order's delivery lease, and the audit
history of repaired dead letters.

Additive only: a column with a default on ``kci_delivery_lease`` and a new table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kci_delivery_lease") as batch:
        batch.add_column(sa.Column("token", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_table(
        "kci_repair",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "order_id", sa.String(length=200), sa.ForeignKey("kci_order.order_id"), nullable=False
        ),
        sa.Column("kci_id", sa.String(length=36), nullable=False),
        sa.Column("sequence_number", sa.Integer(), nullable=False),
        sa.Column("refused_body", sa.Text(), nullable=False),
        sa.Column("gateway_answer", sa.Text(), nullable=True),
        sa.Column("corrected_body", sa.Text(), nullable=False),
        sa.Column("repaired_by", sa.String(length=200), nullable=True),
        sa.Column("repaired_at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_kci_repair_order", "kci_repair", ["order_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_kci_repair_order", table_name="kci_repair")
    op.drop_table("kci_repair")
    with op.batch_alter_table("kci_delivery_lease") as batch:
        batch.drop_column("token")
