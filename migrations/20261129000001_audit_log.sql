-- The audit log (issue 18): who did what in a tenant, when and from where. Append-only: the
-- store has no UPDATE or DELETE for it. `tenant_id` is NULL for platform actions (a tenant
-- created by the operator). `actor` is the user's email at the time, `cli` for the command
-- line; `actor_id` the user's id (NULL for the CLI). `details` is a JSON object that never holds
-- a secret (no key secrets, passwords or tokens). `at` is Unix milliseconds. Ids grow with
-- insertion (the next is the largest plus one, taken in the write transaction), so pages go
-- back by id. Portable between SQLite and PostgreSQL, like the others.
CREATE TABLE audit_log (
    id BIGINT PRIMARY KEY,
    tenant_id TEXT,
    actor_id TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL,
    address TEXT NOT NULL,
    at BIGINT NOT NULL
);

-- A tenant's entries, newest first (the dashboard's page and `herald audit`).
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id);
