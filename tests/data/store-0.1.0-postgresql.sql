-- The monitoring store as regrow 0.1.0 created it (metadata.create_all, no version table).
-- Dialect: postgresql. Frozen for the migration tests: do not edit.

CREATE TABLE alias_history (
	id SERIAL NOT NULL,
	model VARCHAR(255) NOT NULL,
	alias VARCHAR(64) NOT NULL,
	old_version VARCHAR(32),
	new_version VARCHAR(32),
	reason TEXT NOT NULL,
	actor VARCHAR(255) NOT NULL,
	run_id VARCHAR(64),
	at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_alias_history_model ON alias_history (model);

CREATE TABLE bakes (
	id SERIAL NOT NULL,
	model VARCHAR(255) NOT NULL,
	version VARCHAR(32) NOT NULL,
	previous_version VARCHAR(32) NOT NULL,
	windows INTEGER NOT NULL,
	windows_done INTEGER NOT NULL,
	tolerance FLOAT NOT NULL,
	min_labels INTEGER NOT NULL,
	state VARCHAR(16) NOT NULL,
	detail TEXT,
	started_at TIMESTAMP WITH TIME ZONE NOT NULL,
	ended_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id)
);
CREATE INDEX ix_bakes_model ON bakes (model);

CREATE TABLE circuit_resets (
	id SERIAL NOT NULL,
	model VARCHAR(255) NOT NULL,
	actor VARCHAR(255) NOT NULL,
	reason TEXT NOT NULL,
	at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_circuit_resets_model ON circuit_resets (model);

CREATE TABLE drift_checks (
	id SERIAL NOT NULL,
	model VARCHAR(255) NOT NULL,
	version VARCHAR(32),
	checked_at TIMESTAMP WITH TIME ZONE NOT NULL,
	window_rows INTEGER NOT NULL,
	verdict VARCHAR(32) NOT NULL,
	drifted BOOLEAN NOT NULL,
	drift_share FLOAT,
	drifted_columns TEXT,
	prediction_drift BOOLEAN,
	performance TEXT,
	summary TEXT NOT NULL,
	report_path TEXT,
	retrain_request_id INTEGER,
	PRIMARY KEY (id)
);
CREATE INDEX ix_drift_checks_model ON drift_checks (model);

CREATE TABLE labels (
	id SERIAL NOT NULL,
	model VARCHAR(255) NOT NULL,
	row_id VARCHAR(255) NOT NULL,
	label TEXT NOT NULL,
	matched BOOLEAN NOT NULL,
	received_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_labels_model_row ON labels (model, row_id);

CREATE TABLE policy_locks (
	model VARCHAR(255) NOT NULL,
	touched_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (model)
);

CREATE TABLE predictions (
	id SERIAL NOT NULL,
	model VARCHAR(255) NOT NULL,
	version VARCHAR(32) NOT NULL,
	batch_id VARCHAR(64) NOT NULL,
	row_id VARCHAR(255) NOT NULL,
	event_time TIMESTAMP WITHOUT TIME ZONE,
	scored_at TIMESTAMP WITH TIME ZONE NOT NULL,
	prediction TEXT NOT NULL,
	score FLOAT,
	inputs TEXT NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_predictions_model_id ON predictions (model, id);
CREATE INDEX ix_predictions_model_row ON predictions (model, row_id);

CREATE TABLE retrain_requests (
	id SERIAL NOT NULL,
	model VARCHAR(255) NOT NULL,
	kind VARCHAR(32) NOT NULL,
	reason TEXT NOT NULL,
	ref VARCHAR(255),
	verdict VARCHAR(32) NOT NULL,
	detail TEXT,
	state VARCHAR(16) NOT NULL,
	run_id VARCHAR(64),
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id)
);
CREATE INDEX ix_retrain_requests_model_state ON retrain_requests (model, state, id);
CREATE INDEX ix_retrain_requests_model_verdict ON retrain_requests (model, verdict, created_at);

CREATE TABLE shadow_predictions (
	id SERIAL NOT NULL,
	model VARCHAR(255) NOT NULL,
	version VARCHAR(32) NOT NULL,
	batch_id VARCHAR(64) NOT NULL,
	row_id VARCHAR(255) NOT NULL,
	prediction TEXT NOT NULL,
	score FLOAT,
	scored_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_shadow_model_version_row ON shadow_predictions (model, version, row_id);

CREATE TABLE training_leases (
	key VARCHAR(300) NOT NULL,
	model VARCHAR(255) NOT NULL,
	holder VARCHAR(255) NOT NULL,
	renewed_at TIMESTAMP WITH TIME ZONE NOT NULL,
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (key)
);
CREATE INDEX ix_training_leases_model ON training_leases (model);

CREATE TABLE training_runs (
	id SERIAL NOT NULL,
	model VARCHAR(255) NOT NULL,
	run_id VARCHAR(64),
	trigger VARCHAR(64) NOT NULL,
	reason TEXT,
	status VARCHAR(32) NOT NULL,
	verdict VARCHAR(32),
	version VARCHAR(32),
	detail TEXT,
	started_at TIMESTAMP WITH TIME ZONE NOT NULL,
	ended_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id)
);
CREATE INDEX ix_training_runs_model ON training_runs (model);

CREATE TABLE webhook_deliveries (
	id SERIAL NOT NULL,
	delivery_id VARCHAR(255) NOT NULL,
	endpoint VARCHAR(64) NOT NULL,
	model VARCHAR(255),
	body_sha256 VARCHAR(64) NOT NULL,
	status VARCHAR(16) NOT NULL,
	status_code INTEGER,
	response TEXT,
	request_id INTEGER,
	received_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (delivery_id)
);
