-- The log the hourly invitation cap counts (review-roles 2): one row per invitation created,
-- resends included, kept for an hour whether the invitation is still pending, replaced, revoked
-- or accepted (deleting an invitation does not shrink it). Portable between SQLite and
-- PostgreSQL.
CREATE TABLE invitation_sends (
    tenant_id TEXT NOT NULL,
    sent_at BIGINT NOT NULL
);

CREATE INDEX invitation_sends_by_tenant ON invitation_sends (tenant_id, sent_at);
