-- Webhooks: endpoints per app and the durable delivery outbox. Portable like the others.

CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    url TEXT NOT NULL,
    -- Comma-separated event types.
    events TEXT NOT NULL,
    -- Only channels starting with this prefix ('' = every channel).
    channel_prefix TEXT NOT NULL,
    -- Extra request headers as a JSON object of strings.
    headers TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- One row per request: a batch of events for one endpoint. status is 'pending', 'delivered' or
-- 'failed'. Ids grow in order of occurrence; delivery keeps that order per channel.
CREATE TABLE webhook_deliveries (
    id BIGINT PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    -- The JSON array of events.
    events TEXT NOT NULL,
    -- The channels the events are about, newline-separated (for ordering).
    channels TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_attempt_at BIGINT NOT NULL,
    last_status BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    latency_ms BIGINT NOT NULL
);

CREATE INDEX webhook_deliveries_status ON webhook_deliveries (status, id);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);

-- The usage flush prunes per-minute rows by age.
CREATE INDEX usage_minutely_minute ON usage_minutely (minute);
