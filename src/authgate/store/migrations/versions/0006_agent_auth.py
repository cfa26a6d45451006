"""Agent Auth: our Ed25519 keys, enrolled agents, remembered consents, issued tokens (for revocation).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agentauth_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("private_jwk", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("retired_at", sa.BigInteger),
    )
    op.create_table(
        "agentauth_agents",
        sa.Column("agent_id", sa.String(300), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("jkt", sa.String(64), nullable=False),
        sa.Column("public_jwk", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger),
    )
    op.create_table(
        "agentauth_consents",
        sa.Column("subject", sa.String(64), primary_key=True),
        sa.Column("agent_id", sa.String(300), primary_key=True),
        sa.Column("resource", sa.String(255), primary_key=True),
        sa.Column("scope", sa.String(128), primary_key=True),
        sa.Column("granted_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger),
    )
    op.create_table(
        "agentauth_tokens",
        sa.Column("jti", sa.String(128), primary_key=True),
        sa.Column("typ", sa.String(24), nullable=False),
        sa.Column("agent_id", sa.String(300), nullable=False, index=True),
        sa.Column("subject", sa.String(64), index=True),
        sa.Column("audience", sa.String(255)),
        sa.Column("issued_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
        sa.Column("revoked_at", sa.BigInteger),
    )


def downgrade() -> None:
    op.drop_table("agentauth_tokens")
    op.drop_table("agentauth_consents")
    op.drop_table("agentauth_agents")
    op.drop_table("agentauth_keys")
