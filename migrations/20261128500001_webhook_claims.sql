-- Cluster mode (issue 14): several nodes share the webhook outbox, and each pending row is
-- delivered by the one node that claimed it. claimed_by is the claiming process's id ('' when
-- unclaimed), claimed_until the end of its lease (Unix ms of that node's clock; 0 when
-- unclaimed). A row whose lease ended may be claimed by another node. Portable like the others.
ALTER TABLE webhook_deliveries ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE webhook_deliveries ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0;

-- A node's own claims (renewal, release).
CREATE INDEX webhook_deliveries_claims ON webhook_deliveries (claimed_by, status);
