-- Per-app Mercure hub settings (issue 16). Portable between SQLite and PostgreSQL, like the
-- others. The text columns hold '' for "not set": no HS256 key of its own (the app's secret
-- verifies tokens), no PEM public key, the default audience (the hub's URL), no issuer check.
ALTER TABLE apps ADD COLUMN mercure_jwt_key TEXT NOT NULL DEFAULT '';
ALTER TABLE apps ADD COLUMN mercure_public_key TEXT NOT NULL DEFAULT '';
ALTER TABLE apps ADD COLUMN mercure_audience TEXT NOT NULL DEFAULT '';
ALTER TABLE apps ADD COLUMN mercure_issuer TEXT NOT NULL DEFAULT '';
-- Subscribers without a token get public updates only when this is 1.
ALTER TABLE apps ADD COLUMN mercure_anonymous BIGINT NOT NULL DEFAULT 0;
ALTER TABLE apps ADD COLUMN mercure_history_size BIGINT NOT NULL DEFAULT 1000;
ALTER TABLE apps ADD COLUMN mercure_history_seconds BIGINT NOT NULL DEFAULT 3600;
