-- Per-app caps (issue 12, items 4 and 5) and what a tenant admin may create. Portable between
-- SQLite and PostgreSQL, like the others. 0 means unlimited, as for every limit column.
ALTER TABLE apps ADD COLUMN max_channels BIGINT NOT NULL DEFAULT 0;
ALTER TABLE apps ADD COLUMN max_cache_channels BIGINT NOT NULL DEFAULT 0;
-- Until now one connection could hold 1000 subscriptions; 100 is the documented default and
-- covers what pusher-js apps subscribe to.
ALTER TABLE apps ADD COLUMN max_subscriptions_per_connection BIGINT NOT NULL DEFAULT 100;
-- Burst = the subscriptions cap, so a reconnecting client resubscribes everything at once.
ALTER TABLE apps ADD COLUMN max_subscribes_per_second BIGINT NOT NULL DEFAULT 10;

-- Apps created from a plan take that plan's values (server/src/tenants/plans.rs).
UPDATE apps SET max_channels = 500, max_cache_channels = 50 WHERE plan = 'sandbox';
UPDATE apps SET max_channels = 2000, max_cache_channels = 200 WHERE plan = 'startup';
UPDATE apps SET max_channels = 10000, max_cache_channels = 1000,
    max_subscriptions_per_connection = 200, max_subscribes_per_second = 20 WHERE plan = 'pro';
UPDATE apps SET max_channels = 50000, max_cache_channels = 5000,
    max_subscriptions_per_connection = 500, max_subscribes_per_second = 50 WHERE plan = 'business';
UPDATE apps SET max_subscriptions_per_connection = 1000, max_subscribes_per_second = 0
    WHERE plan = 'unlimited';

-- What the tenant's admins may create: at most max_apps apps (0 = no cap) from the plans listed
-- (comma-separated; '' = every plan but unlimited). The operator is not bound by either.
ALTER TABLE tenants ADD COLUMN max_apps BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN plans TEXT NOT NULL DEFAULT '';
