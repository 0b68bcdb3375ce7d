-- Dashboard sessions in the tenant store (issue 14), so every node sharing the store accepts a
-- session whichever node began it. The key is the SHA-256 (hex) of the cookie's token, never the
-- token itself. Times are Unix milliseconds of the node's clock. A row carries its own terms:
-- idle_ms (how long it lives unused) and ends_at (its absolute end); expires_at is the earlier
-- of last_seen + idle_ms and ends_at, so lookups and the sweep need no constants. Portable
-- between SQLite and PostgreSQL, like the others.
CREATE TABLE dashboard_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    generation BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    idle_ms BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- A user's sessions (the per-user cap, ending the others after a password change).
CREATE INDEX dashboard_sessions_by_user ON dashboard_sessions (user_id, started_at);
-- The sweep of expired rows.
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
