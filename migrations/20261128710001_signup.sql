-- Self-service sign-up and password resets (issue 18). Users created before this (by the
-- operator, the CLI or the first start) count as verified; a signed-up user is not until they
-- follow the emailed link (1 = verified, 0 = not yet).
ALTER TABLE users ADD COLUMN email_verified BIGINT NOT NULL DEFAULT 1;

-- Links sent by email: the key is the SHA-256 (hex) of the link's token, never the token itself.
-- purpose: 'verify' or 'reset'. used_at: 0 until the link is followed (single use). password_hash:
-- for a 'verify' link, the password chosen at the sign-up that sent it (it becomes the account's
-- when the link is followed); '' for a 'reset' link. Times are Unix milliseconds.
CREATE TABLE email_tokens (
    token_hash TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    user_id TEXT NOT NULL,
    password_hash TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT NOT NULL DEFAULT 0
);

-- A user's recent links (the cap on links per hour).
CREATE INDEX email_tokens_by_user ON email_tokens (user_id, purpose, created_at);
-- The sweep of expired links.
CREATE INDEX email_tokens_by_expiry ON email_tokens (expires_at);
