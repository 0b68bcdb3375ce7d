-- Entries per tenant in the audit log (`''` for platform entries, whose tenant_id is NULL),
-- kept in each entry's own transaction and by the sweeps that delete entries, so the sweep
-- finds a tenant over its cap of entries without counting the log. Portable between SQLite and
-- PostgreSQL, like the others.
CREATE TABLE audit_counts (
    tenant_id TEXT PRIMARY KEY,
    entries BIGINT NOT NULL
);

INSERT INTO audit_counts (tenant_id, entries)
SELECT COALESCE(tenant_id, ''), COUNT(*) FROM audit_log GROUP BY COALESCE(tenant_id, '');
