-- The audit log's id counter: a change's entry is written in the change's own transaction, so
-- the next id cannot be "the largest plus one, retried on a clash" (a clash on PostgreSQL
-- aborts the whole transaction, the change with it). Updating this one row takes a row lock
-- held to the commit: concurrent writers take ids one after another, in commit order.
CREATE TABLE audit_counter (
    id INTEGER PRIMARY KEY,
    last_id BIGINT NOT NULL
);

INSERT INTO audit_counter (id, last_id) SELECT 1, COALESCE(MAX(id), 0) FROM audit_log;
