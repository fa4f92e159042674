-- The state database's schema as autopilot created it before migrations (create_all, BASE 5ee36c9), PostgreSQL.
-- Captured from the statements today's code emitted; frozen: the upgrade test builds a legacy database from it.

CREATE TABLE alias_history (
	id SERIAL NOT NULL, 
	model VARCHAR(256) NOT NULL, 
	alias VARCHAR(64) NOT NULL, 
	from_version INTEGER, 
	to_version INTEGER, 
	action VARCHAR(32) NOT NULL, 
	actor VARCHAR(256) NOT NULL, 
	reason TEXT NOT NULL, 
	at TIMESTAMP WITH TIME ZONE NOT NULL, 
	decision_ref VARCHAR(512), 
	idempotency_key VARCHAR(512), 
	PRIMARY KEY (id), 
	UNIQUE (idempotency_key)
);

CREATE INDEX ix_alias_history_model_alias ON alias_history (model, alias, id);

CREATE TABLE alias_intents (
	id SERIAL NOT NULL, 
	model VARCHAR(256) NOT NULL, 
	alias VARCHAR(64) NOT NULL, 
	from_version INTEGER, 
	to_version INTEGER NOT NULL, 
	action VARCHAR(32) NOT NULL, 
	actor VARCHAR(256) NOT NULL, 
	reason TEXT NOT NULL, 
	at TIMESTAMP WITH TIME ZONE NOT NULL, 
	decision_ref VARCHAR(512), 
	idempotency_key VARCHAR(512), 
	PRIMARY KEY (id)
);

CREATE INDEX ix_alias_intents_model ON alias_intents (model);

CREATE TABLE anomaly_points (
	id SERIAL NOT NULL, 
	model VARCHAR(256) NOT NULL, 
	series VARCHAR(128) NOT NULL, 
	at TIMESTAMP WITH TIME ZONE NOT NULL, 
	value FLOAT NOT NULL, 
	alarms TEXT NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_anomaly_point UNIQUE (model, series, at)
);

CREATE INDEX ix_anomaly_points_model_series_at ON anomaly_points (model, series, at);

CREATE TABLE anomaly_state (
	model VARCHAR(256) NOT NULL, 
	series VARCHAR(128) NOT NULL, 
	state TEXT, 
	updated_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (model, series)
);

CREATE TABLE deploy_observations (
	id SERIAL NOT NULL, 
	model VARCHAR(256) NOT NULL, 
	instance VARCHAR(64) NOT NULL, 
	predicted_p95_ms FLOAT NOT NULL, 
	observed_p95_ms FLOAT NOT NULL, 
	predicted_rss_mb FLOAT NOT NULL, 
	observed_rss_mb FLOAT NOT NULL, 
	at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_deploy_observations_model ON deploy_observations (model);

CREATE TABLE monitoring_windows (
	id SERIAL NOT NULL, 
	model VARCHAR(256) NOT NULL, 
	window_start TIMESTAMP WITH TIME ZONE NOT NULL, 
	window_end TIMESTAMP WITH TIME ZONE NOT NULL, 
	version INTEGER, 
	action VARCHAR(32) NOT NULL, 
	report TEXT NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_monitoring_window UNIQUE (model, window_end)
);

CREATE TABLE retrain_triggers (
	id SERIAL NOT NULL, 
	model VARCHAR(256) NOT NULL, 
	run_id VARCHAR(256) NOT NULL, 
	at TIMESTAMP WITH TIME ZONE NOT NULL, 
	strategy VARCHAR(32) NOT NULL, 
	reason TEXT NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_retrain_trigger UNIQUE (model, run_id)
);

CREATE TABLE alert_outbox (
	id SERIAL NOT NULL, 
	dag_id VARCHAR(250) NOT NULL, 
	run_id VARCHAR(250) NOT NULL, 
	outcome VARCHAR(32) NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	conn_id VARCHAR(250) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	claim VARCHAR(64) NOT NULL, 
	lease_until TIMESTAMP WITH TIME ZONE NOT NULL, 
	attempts INTEGER NOT NULL, 
	payload TEXT NOT NULL, 
	task_id VARCHAR(250), 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	next_attempt_at TIMESTAMP WITH TIME ZONE, 
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	sent_at TIMESTAMP WITH TIME ZONE, 
	error VARCHAR(512), 
	PRIMARY KEY (id), 
	CONSTRAINT uq_alert_outbox_key UNIQUE (dag_id, run_id, outcome)
);

CREATE INDEX ix_alert_outbox_status_next ON alert_outbox (status, next_attempt_at);

