"""Campaigns: advertisers, campaigns, line items and their creatives, creatives, and the
revision number readers poll to know the buy side changed.

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
        "advertisers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("domain", sa.String(253), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "advertiser_id",
            sa.String(64),
            sa.ForeignKey("advertisers.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("start_micros", sa.BigInteger, nullable=False),
        sa.Column("end_micros", sa.BigInteger, nullable=False),
        sa.Column("total_budget_micros", sa.BigInteger, nullable=False),
        sa.Column("daily_budget_micros", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("goal", sa.String(8), nullable=False),
        sa.Column("goal_amount_micros", sa.BigInteger, nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("max_bid_cpm_micros", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("min_bid_cpm_micros", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column("frequency_caps", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    )
    op.create_table(
        "creatives",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "advertiser_id",
            sa.String(64),
            sa.ForeignKey("advertisers.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("landing_url", sa.String(2000), nullable=False),
        sa.Column("sizes", sa.JSON, nullable=False),
        sa.Column("adomain", sa.JSON, nullable=False),
        sa.Column("categories", sa.JSON, nullable=False),
        sa.Column("markup", sa.Text, nullable=False),
        sa.Column("vast_url", sa.String(2000), nullable=False, server_default=""),
        sa.Column("duration_s", sa.Integer, nullable=False, server_default="0"),
        sa.Column("mimes", sa.JSON, nullable=False),
        sa.Column("native", sa.JSON, nullable=True),
        sa.Column("approval", sa.String(16), nullable=False, server_default="pending"),
    )
    op.create_table(
        "line_items",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "campaign_id",
            sa.String(64),
            sa.ForeignKey("campaigns.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("targeting", sa.JSON, nullable=False),
        sa.Column("frequency_caps", sa.JSON, nullable=False),
        sa.Column("daily_budget_micros", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("total_budget_micros", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    )
    op.create_table(
        "line_item_creatives",
        sa.Column(
            "line_item_id",
            sa.String(64),
            sa.ForeignKey("line_items.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "creative_id",
            sa.String(64),
            sa.ForeignKey("creatives.id", ondelete="CASCADE"),
            primary_key=True,
            index=True,
        ),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
    )
    revisions = op.create_table(
        "catalog_revisions",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("revision", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.bulk_insert(revisions, [{"name": "campaigns", "revision": 0}])


def downgrade() -> None:
    op.drop_table("catalog_revisions")
    op.drop_table("line_item_creatives")
    op.drop_table("line_items")
    op.drop_table("creatives")
    op.drop_table("campaigns")
    op.drop_table("advertisers")
