-- Management API tokens (issue 18). Each is scoped to one tenant and to a list of scopes
-- (space-separated, e.g. `apps:read apps:write`). The token text is shown once and never stored:
-- `token_hash` is its SHA-256 (hex). Times are Unix seconds; 0 in `expires_at` means "never",
-- 0 in `last_used_at` / `revoked_at` / `refused_at` means "not yet" (`refused_at`: the last
-- audited refusal of the token, so a dead token's refusals are audited at most once a minute). Portable between SQLite and PostgreSQL
-- (no NULL-typed binds, no dialect-only types), like the others.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL DEFAULT 0,
    last_used_at BIGINT NOT NULL DEFAULT 0,
    revoked_at BIGINT NOT NULL DEFAULT 0,
    refused_at BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX api_tokens_by_tenant ON api_tokens (tenant_id, created_at);
