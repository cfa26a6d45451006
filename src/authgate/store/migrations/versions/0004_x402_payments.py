"""x402 payments: reserved and settled payment authorizations (the facilitator's exactly-once ledger).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "x402_payments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("network", sa.String(64), nullable=False),
        sa.Column("asset", sa.String(64), nullable=False),
        sa.Column("payer", sa.String(64), nullable=False, index=True),
        sa.Column("nonce", sa.String(66), nullable=False),
        sa.Column("payee", sa.String(64), nullable=False),
        sa.Column("amount", sa.String(80), nullable=False),
        sa.Column("scheme", sa.String(32), nullable=False),
        sa.Column("resource_url", sa.String(2048)),
        sa.Column("digest", sa.String(66), nullable=False),
        sa.Column("valid_before", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("tx_hash", sa.String(66)),
        sa.Column("error_reason", sa.String(128)),
        sa.Column("error_message", sa.String(512)),
        sa.Column("owner", sa.String(32), nullable=False),
        sa.Column("lease_until", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False, index=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("settled_at", sa.BigInteger),
        sa.UniqueConstraint("network", "asset", "payer", "nonce", name="uq_x402_payments_authorization"),
    )


def downgrade() -> None:
    op.drop_table("x402_payments")
