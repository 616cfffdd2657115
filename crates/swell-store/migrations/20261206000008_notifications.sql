-- Outbound notifications and the inbound alert receiver (issue 20, item 4).
--
-- `webhooks`: a tenant's webhook, on every group of the tenant (`group_name` NULL) or
-- one group, for the event kinds in `event_kinds` (a JSON list; empty: every kind).
-- `secret` is the HMAC key, sealed like provider credentials (nonce || AES-256-GCM,
-- bound to the tenant and `webhook/<id>`). `start_event_id`: the newest event id when
-- the webhook was made; it is sent only events after it.
--
-- `webhook_cursors`: per webhook and group, the last event handled (delivered, not
-- wanted, or given up on): deliveries are driven from the event log, so none is lost
-- across a restart. Per group because event ids are ordered per group (PostgreSQL
-- assigns ids under a per-group lock; two groups may commit out of id order).
--
-- `webhook_deliveries`: every attempt, for the delivery log and the retry backoff.
--
-- `alert_tokens`: the token (its SHA-256) an Alertmanager presents to
-- `POST /v1/groups/{name}/alerts`; one per group, scoped to it.

CREATE TABLE webhooks (
    id             TEXT    NOT NULL PRIMARY KEY,
    tenant         TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    group_name     TEXT,
    url            TEXT    NOT NULL,
    event_kinds    TEXT    NOT NULL DEFAULT '[]',
    secret         BLOB    NOT NULL,
    start_event_id INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
) STRICT;

CREATE INDEX webhooks_by_tenant ON webhooks (tenant);

CREATE TABLE webhook_cursors (
    webhook       TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    group_name    TEXT    NOT NULL,
    last_event_id INTEGER NOT NULL,
    PRIMARY KEY (webhook, group_name)
) STRICT;

CREATE TABLE webhook_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook     TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    tenant      TEXT    NOT NULL,
    group_name  TEXT    NOT NULL,
    event_id    INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('delivered', 'failed', 'abandoned')),
    status_code INTEGER,
    error       TEXT
) STRICT;

CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (webhook, event_id);

CREATE TABLE alert_tokens (
    tenant     TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    group_name TEXT    NOT NULL,
    token_hash TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, group_name)
) STRICT;
