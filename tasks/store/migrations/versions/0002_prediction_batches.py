"""The prediction log's index: one row per scoring batch written to Parquet; labels indexed by
arrival, so a window finds its labels with one range scan.

Rows logged before this revision stay in `predictions` (inputs as JSON) and are still read.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('prediction_batches',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('model', sa.String(length=255), nullable=False),
        sa.Column('version', sa.String(length=32), nullable=False),
        sa.Column('batch_id', sa.String(length=64), nullable=False),
        sa.Column('path', sa.Text(), nullable=False),
        sa.Column('rows', sa.Integer(), nullable=False),
        sa.Column('scored_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('first_event_time', sa.DateTime(timezone=False), nullable=True),
        sa.Column('last_event_time', sa.DateTime(timezone=False), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('batch_id')
    )
    op.create_index('ix_prediction_batches_model_id', 'prediction_batches', ['model', 'id'],
                    unique=False)
    op.create_index('ix_labels_model_received', 'labels', ['model', 'received_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_labels_model_received', table_name='labels')
    op.drop_index('ix_prediction_batches_model_id', table_name='prediction_batches')
    op.drop_table('prediction_batches')
