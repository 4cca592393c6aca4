"""Order origins: the chart version each order was created under, and its document then.

Revision ID: 0005
Revises: 0002
Create Date: 2026-12-03

Orders created before this revision have no origin row: ``history replay`` counts them as
skipped (their first document is not kept anywhere else).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kci_order_origin",
        sa.Column(
            "order_id",
            sa.String(length=200),
            sa.ForeignKey("kci_order.order_id"),
            primary_key=True,
        ),
        sa.Column("chart_version", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("kci_order_origin")
