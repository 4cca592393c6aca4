"""The Supplier API's answers: idempotency of the gateway's requests and the KCIs a 202 owes.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kci_inbound_request",
        sa.Column("tenant", sa.String(length=200), primary_key=True),
        sa.Column("kind", sa.String(length=16), primary_key=True),
        sa.Column("gateway_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=200), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("owes", sa.String(length=64), nullable=True),
        sa.Column("answered_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("settled_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("request", sa.Text(), nullable=True),
    )
    op.create_index("ix_kci_inbound_request_owed", "kci_inbound_request", ["owes", "settled_at_ms"])


def downgrade() -> None:
    op.drop_index("ix_kci_inbound_request_owed", table_name="kci_inbound_request")
    op.drop_table("kci_inbound_request")
