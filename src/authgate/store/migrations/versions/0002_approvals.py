"""Human approvals: one table of approval requests shared by every mechanism, and each user's channels.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(64), index=True),
        sa.Column("client_id", sa.String(255)),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("binding_message", sa.String(256)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
        sa.Column("decided_at", sa.BigInteger),
        sa.Column("decided_by", sa.String(255)),
        sa.Column("channel", sa.String(32)),
        sa.Column("link_hash", sa.String(64), unique=True),
        sa.Column("code_hash", sa.String(64)),
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email", sa.String(320)))
        batch.add_column(sa.Column("phone", sa.String(32)))
        batch.add_column(sa.Column("webhook_url", sa.String(2000)))
        batch.add_column(sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        for name in ("is_admin", "webhook_url", "phone", "email"):
            batch.drop_column(name)
    op.drop_table("approval_requests")
