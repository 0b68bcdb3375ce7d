-- Invitations to join a tenant (issue 18). The token is never stored: `token_hash` is its
-- SHA-256 (hex). An invitation is single-use (deleted when accepted), expires at `expires_at`
-- (Unix seconds), and is swept once expired. Portable between SQLite and PostgreSQL.
CREATE TABLE invitations (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    invited_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX invitations_by_tenant ON invitations (tenant_id, created_at);
