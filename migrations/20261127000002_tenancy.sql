-- Tenancy and quotas: admin users, a second key pair per app, allowed origins, usage history.
-- Portable between SQLite and PostgreSQL, like the initial migration.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    tenant_id TEXT REFERENCES tenants (id),
    created_at BIGINT NOT NULL
);

-- The previous key pair, kept working during a rotation until it is revoked or expires
-- (prev_expires_at 0 = until revoked).
ALTER TABLE apps ADD COLUMN prev_key TEXT;
ALTER TABLE apps ADD COLUMN prev_secret TEXT;
ALTER TABLE apps ADD COLUMN prev_expires_at BIGINT NOT NULL DEFAULT 0;
-- Allowed WebSocket origins, one per line; empty = any origin.
ALTER TABLE apps ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '';
-- The plan the app was created from (informational; limits are what is enforced).
ALTER TABLE apps ADD COLUMN plan TEXT NOT NULL DEFAULT 'custom';

-- Usage per UTC day (day = days since 1970-01-01) and per minute (minute = minutes since the
-- epoch, kept for 25 hours). Written by the servers' background flush as increments.
CREATE TABLE usage_daily (
    app_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    messages BIGINT NOT NULL,
    peak_connections BIGINT NOT NULL,
    PRIMARY KEY (app_id, day)
);

CREATE TABLE usage_minutely (
    app_id TEXT NOT NULL,
    minute BIGINT NOT NULL,
    messages BIGINT NOT NULL,
    peak_connections BIGINT NOT NULL,
    PRIMARY KEY (app_id, minute)
);
