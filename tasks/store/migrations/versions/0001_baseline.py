"""Baseline: the monitoring store as regrow 0.1.0 created it (before migrations existed).

A store that release made has every table below and no version table: `regrow db upgrade`
recognises it, stamps it with this revision and applies the later ones.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alias_history',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('model', sa.String(length=255), nullable=False),
        sa.Column('alias', sa.String(length=64), nullable=False),
        sa.Column('old_version', sa.String(length=32), nullable=True),
        sa.Column('new_version', sa.String(length=32), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('actor', sa.String(length=255), nullable=False),
        sa.Column('run_id', sa.String(length=64), nullable=True),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_alias_history_model'), 'alias_history', ['model'], unique=False)
    op.create_table('bakes',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('model', sa.String(length=255), nullable=False),
        sa.Column('version', sa.String(length=32), nullable=False),
        sa.Column('previous_version', sa.String(length=32), nullable=False),
        sa.Column('windows', sa.Integer(), nullable=False),
        sa.Column('windows_done', sa.Integer(), nullable=False),
        sa.Column('tolerance', sa.Float(), nullable=False),
        sa.Column('min_labels', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_bakes_model'), 'bakes', ['model'], unique=False)
    op.create_table('circuit_resets',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('model', sa.String(length=255), nullable=False),
        sa.Column('actor', sa.String(length=255), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_circuit_resets_model'), 'circuit_resets', ['model'], unique=False)
    op.create_table('drift_checks',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('model', sa.String(length=255), nullable=False),
        sa.Column('version', sa.String(length=32), nullable=True),
        sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('window_rows', sa.Integer(), nullable=False),
        sa.Column('verdict', sa.String(length=32), nullable=False),
        sa.Column('drifted', sa.Boolean(), nullable=False),
        sa.Column('drift_share', sa.Float(), nullable=True),
        sa.Column('drifted_columns', sa.Text(), nullable=True),
        sa.Column('prediction_drift', sa.Boolean(), nullable=True),
        sa.Column('performance', sa.Text(), nullable=True),
        sa.Column('summary', sa.Text(), nullable=False),
        sa.Column('report_path', sa.Text(), nullable=True),
        sa.Column('retrain_request_id', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_drift_checks_model'), 'drift_checks', ['model'], unique=False)
    op.create_table('labels',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('model', sa.String(length=255), nullable=False),
        sa.Column('row_id', sa.String(length=255), nullable=False),
        sa.Column('label', sa.Text(), nullable=False),
        sa.Column('matched', sa.Boolean(), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_labels_model_row', 'labels', ['model', 'row_id'], unique=False)
    op.create_table('policy_locks',
        sa.Column('model', sa.String(length=255), nullable=False),
        sa.Column('touched_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('model')
    )
    op.create_table('predictions',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('model', sa.String(length=255), nullable=False),
        sa.Column('version', sa.String(length=32), nullable=False),
        sa.Column('batch_id', sa.String(length=64), nullable=False),
        sa.Column('row_id', sa.String(length=255), nullable=False),
        sa.Column('event_time', sa.DateTime(), nullable=True),
        sa.Column('scored_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('prediction', sa.Text(), nullable=False),
        sa.Column('score', sa.Float(), nullable=True),
        sa.Column('inputs', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_predictions_model_id', 'predictions', ['model', 'id'], unique=False)
    op.create_index('ix_predictions_model_row', 'predictions', ['model', 'row_id'], unique=False)
    op.create_table('retrain_requests',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('model', sa.String(length=255), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('ref', sa.String(length=255), nullable=True),
        sa.Column('verdict', sa.String(length=32), nullable=False),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('run_id', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_retrain_requests_model_state', 'retrain_requests',
                    ['model', 'state', 'id'], unique=False)
    op.create_index('ix_retrain_requests_model_verdict', 'retrain_requests',
                    ['model', 'verdict', 'created_at'], unique=False)
    op.create_table('shadow_predictions',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('model', sa.String(length=255), nullable=False),
        sa.Column('version', sa.String(length=32), nullable=False),
        sa.Column('batch_id', sa.String(length=64), nullable=False),
        sa.Column('row_id', sa.String(length=255), nullable=False),
        sa.Column('prediction', sa.Text(), nullable=False),
        sa.Column('score', sa.Float(), nullable=True),
        sa.Column('scored_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_shadow_model_version_row', 'shadow_predictions',
                    ['model', 'version', 'row_id'], unique=False)
    op.create_table('training_leases',
        sa.Column('key', sa.String(length=300), nullable=False),
        sa.Column('model', sa.String(length=255), nullable=False),
        sa.Column('holder', sa.String(length=255), nullable=False),
        sa.Column('renewed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key')
    )
    op.create_index('ix_training_leases_model', 'training_leases', ['model'], unique=False)
    op.create_table('training_runs',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('model', sa.String(length=255), nullable=False),
        sa.Column('run_id', sa.String(length=64), nullable=True),
        sa.Column('trigger', sa.String(length=64), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('status', sa.String(length=32), nullable=False),
        sa.Column('verdict', sa.String(length=32), nullable=True),
        sa.Column('version', sa.String(length=32), nullable=True),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_training_runs_model'), 'training_runs', ['model'], unique=False)
    op.create_table('webhook_deliveries',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('delivery_id', sa.String(length=255), nullable=False),
        sa.Column('endpoint', sa.String(length=64), nullable=False),
        sa.Column('model', sa.String(length=255), nullable=True),
        sa.Column('body_sha256', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('response', sa.Text(), nullable=True),
        sa.Column('request_id', sa.Integer(), nullable=True),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('delivery_id')
    )


def downgrade() -> None:
    op.drop_table('webhook_deliveries')
    op.drop_index(op.f('ix_training_runs_model'), table_name='training_runs')
    op.drop_table('training_runs')
    op.drop_index('ix_training_leases_model', table_name='training_leases')
    op.drop_table('training_leases')
    op.drop_index('ix_shadow_model_version_row', table_name='shadow_predictions')
    op.drop_table('shadow_predictions')
    op.drop_index('ix_retrain_requests_model_verdict', table_name='retrain_requests')
    op.drop_index('ix_retrain_requests_model_state', table_name='retrain_requests')
    op.drop_table('retrain_requests')
    op.drop_index('ix_predictions_model_row', table_name='predictions')
    op.drop_index('ix_predictions_model_id', table_name='predictions')
    op.drop_table('predictions')
    op.drop_table('policy_locks')
    op.drop_index('ix_labels_model_row', table_name='labels')
    op.drop_table('labels')
    op.drop_index(op.f('ix_drift_checks_model'), table_name='drift_checks')
    op.drop_table('drift_checks')
    op.drop_index(op.f('ix_circuit_resets_model'), table_name='circuit_resets')
    op.drop_table('circuit_resets')
    op.drop_index(op.f('ix_bakes_model'), table_name='bakes')
    op.drop_table('bakes')
    op.drop_index(op.f('ix_alias_history_model'), table_name='alias_history')
    op.drop_table('alias_history')
