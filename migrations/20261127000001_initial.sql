-- Herald's tenant store. Portable between SQLite and PostgreSQL: TEXT and BIGINT only,
-- booleans stored as 0/1, no engine-specific defaults.

CREATE TABLE herald_meta (
    id BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO herald_meta (id, revision) VALUES (1, 0);

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
INSERT INTO tenants (id, name, created_at) VALUES ('1', 'Default', 0);

CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    app_key TEXT NOT NULL UNIQUE,
    secret TEXT NOT NULL,
    name TEXT NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    enabled BIGINT NOT NULL,
    client_events BIGINT NOT NULL,
    subscription_count BIGINT NOT NULL,
    max_connections BIGINT NOT NULL,
    max_daily_messages BIGINT NOT NULL,
    max_client_events_per_second BIGINT NOT NULL,
    max_backend_events_per_second BIGINT NOT NULL,
    max_read_requests_per_second BIGINT NOT NULL,
    max_presence_members BIGINT NOT NULL,
    max_presence_member_bytes BIGINT NOT NULL,
    max_channel_name_length BIGINT NOT NULL,
    max_event_name_length BIGINT NOT NULL,
    max_event_payload_bytes BIGINT NOT NULL,
    max_channels_per_trigger BIGINT NOT NULL,
    max_batch_size BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
