"""Trust and control: budgets, spending counters, issued mandates, the kill switch and its version counter.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trust_budgets",
        sa.Column("agent", sa.String(300), primary_key=True),
        sa.Column("per_request", sa.BigInteger),
        sa.Column("per_day", sa.BigInteger),
        sa.Column("per_payee_day", sa.BigInteger),
        sa.Column("approver", sa.String(64)),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "trust_spend",
        sa.Column("key", sa.String(320), primary_key=True),
        sa.Column("period", sa.String(32), primary_key=True),
        sa.Column("payee", sa.String(80), primary_key=True),
        sa.Column("spent", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "trust_mandates",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("subject", sa.String(64), nullable=False, index=True),
        sa.Column("agent", sa.String(300), nullable=False, index=True),
        sa.Column("terms", sa.JSON, nullable=False),
        sa.Column("issued_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger),
    )
    op.create_table(
        "trust_kills",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("ident", sa.String(300), primary_key=True),
        sa.Column("killed_at", sa.BigInteger, nullable=False),
        sa.Column("killed_by", sa.String(255)),
        sa.Column("reason", sa.String(500)),
    )
    versions = op.create_table(
        "trust_versions",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(versions, [{"name": "kills", "version": 0}, {"name": "mandates", "version": 0}])


def downgrade() -> None:
    op.drop_table("trust_versions")
    op.drop_table("trust_kills")
    op.drop_table("trust_mandates")
    op.drop_table("trust_spend")
    op.drop_table("trust_budgets")
