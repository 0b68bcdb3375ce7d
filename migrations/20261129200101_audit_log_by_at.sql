-- The audit log by time: the retention sweep takes the oldest entries before a cut-off
-- (`WHERE at < $1 ORDER BY at, id`) and the dashboard's filter takes entries since a time
-- (`at >= $1`). Without it both read the whole table, on every node, every sweep.
CREATE INDEX audit_log_by_at ON audit_log (at, id);
