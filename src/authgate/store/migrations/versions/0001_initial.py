"""Initial schema: clients, users, signing keys, grant artefacts, audit log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(255), primary_key=True),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("secret_hash", sa.String(64)),
        sa.Column("secret_expires_at", sa.BigInteger, nullable=False),
        sa.Column("rat_hash", sa.String(64), unique=True),
        sa.Column("dynamic", sa.Boolean, nullable=False),
        sa.Column("metadata_digest", sa.String(64), index=True),
        sa.Column("issued_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("subject", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(255), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("private_jwk", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("retired_at", sa.BigInteger),
        sa.Column("remove_after", sa.BigInteger),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("client_id", sa.String(255), index=True),
        sa.Column("grant_id", sa.String(64), index=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
        sa.Column("consumed_at", sa.BigInteger),
        sa.Column("revoked_at", sa.BigInteger),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False, index=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(255)),
        sa.Column("subject", sa.String(255)),
        sa.Column("detail", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for name in ("audit_log", "artifacts", "signing_keys", "users", "clients"):
        op.drop_table(name)
