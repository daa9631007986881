"""Catalog: publishers, placements, demand partners.

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
        "publishers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("api_key_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("floor_micros", sa.Integer, nullable=False, server_default="0"),
        sa.Column("blocked_categories", sa.JSON, nullable=False),
        sa.Column("blocked_adomains", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "placements",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "publisher_id",
            sa.String(64),
            sa.ForeignKey("publishers.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("media", sa.String(16), nullable=False, server_default="banner"),
        sa.Column("sizes", sa.JSON, nullable=False),
        sa.Column("floor_micros", sa.Integer, nullable=False, server_default="0"),
        sa.Column("site_domain", sa.String(253), nullable=False, server_default=""),
    )
    op.create_table(
        "demand_partners",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("endpoint", sa.String(2000), nullable=False),
        sa.Column("seat", sa.String(64), nullable=False, server_default=""),
        sa.Column("vendor_id", sa.Integer, nullable=True),
        sa.Column("timeout_ms", sa.Integer, nullable=False, server_default="120"),
        sa.Column("qps_cap", sa.Integer, nullable=True),
        sa.Column("bid_adjustment", sa.Float, nullable=False, server_default="1.0"),
        sa.Column("gzip", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    )


def downgrade() -> None:
    op.drop_table("demand_partners")
    op.drop_table("placements")
    op.drop_table("publishers")
