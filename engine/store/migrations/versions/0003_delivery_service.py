"""Delivery as a service: a fencing token on every order's delivery lease.

Additive only: a column with a default on ``kci_delivery_lease``.

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


def downgrade() -> None:
    with op.batch_alter_table("kci_delivery_lease") as batch:
        batch.drop_column("token")
