-- A user's credential generation: bumped by every password change (dashboard or CLI), so a
-- dashboard session begun at an older generation is over on its next request, on every node.
ALTER TABLE users ADD COLUMN credential_generation BIGINT NOT NULL DEFAULT 0;
