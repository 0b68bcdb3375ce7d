-- Keys the server makes once and every node sharing the store uses (the dashboard's session
-- cookie MAC key). Never shown, never logged.
CREATE TABLE server_keys (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
