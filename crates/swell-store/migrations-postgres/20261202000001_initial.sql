-- Swell's schema on PostgreSQL: the SQLite migrations (`../migrations/`) up to
-- 20261202000004_learned_state, in one step, with the same tables, keys, uniqueness and
-- cascades. Times are BIGINT milliseconds since the Unix epoch; booleans are BOOLEAN;
-- JSON documents (a group's spec, an event's cause, learned states, settings) are TEXT,
-- as in SQLite, so they round-trip byte for byte and a bad one is reported as corrupt
-- when read, never rewritten. Names that are listed in order are `COLLATE "C"`, so
-- `ORDER BY` is byte order (as in SQLite) whatever the database's locale.

CREATE TABLE tenants (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    created_at    BIGINT  NOT NULL,
    display_name  TEXT    NOT NULL DEFAULT '',
    description   TEXT    NOT NULL DEFAULT '',
    -- NULL: the service-wide default (settings `default_quota`) applies.
    max_instances BIGINT  CHECK (max_instances >= 0),
    max_vcpus     BIGINT  CHECK (max_vcpus >= 0),
    max_memory_mb BIGINT  CHECK (max_memory_mb >= 0),
    deleting      BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at    BIGINT  NOT NULL DEFAULT 0
);

-- `scaling_groups`, not `groups`: GROUPS is an SQL keyword (window frames).
CREATE TABLE scaling_groups (
    tenant           TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    name             TEXT COLLATE "C" NOT NULL,
    spec             TEXT    NOT NULL,                -- GroupSpec as JSON
    desired_capacity BIGINT  NOT NULL CHECK (desired_capacity >= 0),
    last_scaling_at  BIGINT,
    deleting         BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE instances (
    tenant        TEXT COLLATE "C" NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,
    group_name    TEXT COLLATE "C" NOT NULL,
    status        TEXT    NOT NULL,
    lifecycle     TEXT    NOT NULL,
    created_order BIGINT  NOT NULL,
    provider      TEXT    NOT NULL,
    host          TEXT,
    address       TEXT,
    native_id     TEXT,
    protected     BOOLEAN NOT NULL DEFAULT FALSE,
    status_reason TEXT,
    created_at    BIGINT  NOT NULL,
    started_at    BIGINT,
    updated_at    BIGINT  NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, group_name, created_order),
    FOREIGN KEY (tenant, group_name) REFERENCES scaling_groups (tenant, name) ON DELETE CASCADE
);

-- The reconciler's scan of live instances across tenants.
CREATE INDEX instances_by_status ON instances (status);

CREATE TABLE events (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    group_name  TEXT    NOT NULL,
    at          BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    instance_id TEXT,
    cause       TEXT,                                 -- Cause as JSON
    message     TEXT    NOT NULL
);

CREATE INDEX events_by_group_id ON events (tenant, group_name, id);
CREATE INDEX events_by_group_at ON events (tenant, group_name, at);

-- Identity, access and accounting. Secrets are never stored in clear: passwords as
-- Argon2id PHC strings, tokens and API keys as SHA-256 hashes, credentials as
-- AES-256-GCM ciphertext.

CREATE TABLE settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL                                 -- JSON
);

CREATE TABLE users (
    name                TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    password_hash       TEXT    NOT NULL,               -- Argon2id PHC string
    is_admin            BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          BIGINT  NOT NULL,
    password_changed_at BIGINT  NOT NULL
);

CREATE TABLE role_bindings (
    user_name  TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    tenant     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    role       TEXT   NOT NULL CHECK (role IN ('owner', 'member', 'viewer')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_name, tenant)
);

CREATE INDEX role_bindings_by_tenant ON role_bindings (tenant);

-- Seed 3: a user who may see, pause and resume only these instances.
CREATE TABLE instance_owners (
    tenant      TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    instance_id TEXT COLLATE "C" NOT NULL,
    user_name   TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, instance_id, user_name)
);

CREATE INDEX instance_owners_by_user ON instance_owners (tenant, user_name);

CREATE TABLE tokens (
    hash       TEXT    NOT NULL PRIMARY KEY,            -- SHA-256 of the token, hex
    user_name  TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    tenant     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    revoked    BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE INDEX tokens_by_user ON tokens (user_name);

CREATE TABLE api_keys (
    hash       TEXT   NOT NULL PRIMARY KEY,             -- SHA-256 of the key, hex
    tenant     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       TEXT COLLATE "C" NOT NULL,
    role       TEXT   NOT NULL CHECK (role IN ('owner', 'member', 'viewer')),
    created_by TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant, name)
);

-- Not tied to the tenants table: the log outlives a deleted tenant.
CREATE TABLE audit_log (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        BIGINT NOT NULL,
    user_name TEXT,                                     -- NULL: unauthenticated
    tenant    TEXT,                                     -- NULL: no tenant resolved
    action    TEXT   NOT NULL,                          -- `POST /v1/groups`
    target    TEXT   NOT NULL,                          -- the request path
    source    TEXT,                                     -- peer address
    result    BIGINT NOT NULL                           -- HTTP status
);

CREATE INDEX audit_by_tenant ON audit_log (tenant, id);

CREATE TABLE provider_credentials (
    tenant     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       TEXT COLLATE "C" NOT NULL,
    sealed     BYTEA  NOT NULL,                         -- nonce || AES-256-GCM ciphertext
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- Five-minute summaries of each group's load per metric, so that forecasting policies
-- keep their daily and weekly memory across restarts and edits of the group. The
-- group's worker prunes its rows older than the retention (16 days).
CREATE TABLE load_history (
    tenant     TEXT COLLATE "C" NOT NULL,
    group_name TEXT COLLATE "C" NOT NULL,
    metric     TEXT COLLATE "C" NOT NULL,
    at         BIGINT           NOT NULL,
    mean       DOUBLE PRECISION NOT NULL,
    max        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, group_name, metric, at),
    FOREIGN KEY (tenant, group_name) REFERENCES scaling_groups (tenant, name) ON DELETE CASCADE
);

-- What each forecasting policy of a group has learned beyond its load history (the
-- record of its forecast errors), one JSON document per policy, so that a restart or an
-- edit of the group does not send it back to its cold start.
CREATE TABLE learned_state (
    tenant     TEXT COLLATE "C" NOT NULL,
    group_name TEXT COLLATE "C" NOT NULL,
    policy     TEXT COLLATE "C" NOT NULL,
    state      TEXT   NOT NULL,
    saved_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, group_name, policy),
    FOREIGN KEY (tenant, group_name) REFERENCES scaling_groups (tenant, name) ON DELETE CASCADE
);
