"""A change counter for the clients table, so every process can cache clients and still see a change made by
any other process on its next request (authgate.store.counters).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    versions = sa.table("trust_versions", sa.column("name", sa.String), sa.column("version", sa.BigInteger))
    op.bulk_insert(versions, [{"name": "clients", "version": 0}])


def downgrade() -> None:
    op.execute("DELETE FROM trust_versions WHERE name = 'clients'")
