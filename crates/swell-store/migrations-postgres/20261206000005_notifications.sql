-- Outbound notifications and the inbound alert receiver (issue 20, item 4), as in
-- SQLite's 20261206000008_notifications: webhooks (sealed HMAC secret), a cursor per
-- webhook and group into the event log, every delivery attempt, and the alert tokens.

CREATE TABLE webhooks (
    id             TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    tenant         TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    group_name     TEXT COLLATE "C",
    url            TEXT   NOT NULL,
    event_kinds    TEXT   NOT NULL DEFAULT '[]',
    secret         BYTEA  NOT NULL,
    start_event_id BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE INDEX webhooks_by_tenant ON webhooks (tenant);

CREATE TABLE webhook_cursors (
    webhook       TEXT COLLATE "C" NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    group_name    TEXT COLLATE "C" NOT NULL,
    last_event_id BIGINT NOT NULL,
    PRIMARY KEY (webhook, group_name)
);

CREATE TABLE webhook_deliveries (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook     TEXT COLLATE "C" NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    tenant      TEXT COLLATE "C" NOT NULL,
    group_name  TEXT COLLATE "C" NOT NULL,
    event_id    BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    outcome     TEXT   NOT NULL CHECK (outcome IN ('delivered', 'failed', 'abandoned')),
    status_code BIGINT,
    error       TEXT
);

CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (webhook, event_id);

CREATE TABLE alert_tokens (
    tenant     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    group_name TEXT COLLATE "C" NOT NULL,
    token_hash TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, group_name)
);
