"""linked wallets with their latest snapshots

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE chain.wallets (
            user_id UUID NOT NULL,
            address TEXT NOT NULL,
            chain_id BIGINT NOT NULL,
            shard SMALLINT NOT NULL,
            link_time TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
            block_number BIGINT,
            block_hash TEXT,
            balance_wei NUMERIC(78, 0),
            nonce BIGINT,
            token_balances JSONB,
            read_time TIMESTAMP WITH TIME ZONE,
            polled_by TEXT,
            poll_count BIGINT DEFAULT '0' NOT NULL,
            fence BIGINT DEFAULT '0' NOT NULL,
            PRIMARY KEY (user_id),
            CONSTRAINT wallets_address_key UNIQUE (address)
        )
        """
    )
    op.execute("CREATE INDEX wallets_by_shard ON chain.wallets (shard, user_id)")


def downgrade() -> None:
    op.drop_table("wallets", schema="chain")
