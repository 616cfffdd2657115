-- Identity, access and accounting (issue 4): tenants' display fields and quotas, users,
-- role bindings, instance owners, login tokens, API keys, the audit log, service-wide
-- settings and encrypted provider credentials. Secrets are never stored in clear:
-- passwords as Argon2id PHC strings, tokens and API keys as SHA-256 hashes, credentials
-- as AES-256-GCM ciphertext.

ALTER TABLE tenants ADD COLUMN display_name  TEXT    NOT NULL DEFAULT '';
ALTER TABLE tenants ADD COLUMN description   TEXT    NOT NULL DEFAULT '';
-- NULL: the service-wide default (settings `default_quota`) applies.
ALTER TABLE tenants ADD COLUMN max_instances INTEGER CHECK (max_instances >= 0);
ALTER TABLE tenants ADD COLUMN max_vcpus     INTEGER CHECK (max_vcpus >= 0);
ALTER TABLE tenants ADD COLUMN max_memory_mb INTEGER CHECK (max_memory_mb >= 0);
ALTER TABLE tenants ADD COLUMN deleting      INTEGER NOT NULL DEFAULT 0 CHECK (deleting IN (0, 1));
ALTER TABLE tenants ADD COLUMN updated_at    INTEGER NOT NULL DEFAULT 0;

CREATE TABLE settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL                                 -- JSON
) STRICT;

CREATE TABLE users (
    name                TEXT    NOT NULL PRIMARY KEY,
    password_hash       TEXT    NOT NULL,               -- Argon2id PHC string
    is_admin            INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    created_at          INTEGER NOT NULL,
    password_changed_at INTEGER NOT NULL
) STRICT;

CREATE TABLE role_bindings (
    user_name  TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    tenant     TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    role       TEXT    NOT NULL CHECK (role IN ('owner', 'member', 'viewer')),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_name, tenant)
) STRICT;

CREATE INDEX role_bindings_by_tenant ON role_bindings (tenant);

-- Seed 3: a user who may see, pause and resume only these instances.
CREATE TABLE instance_owners (
    tenant      TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    instance_id TEXT    NOT NULL,
    user_name   TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, instance_id, user_name)
) STRICT;

CREATE INDEX instance_owners_by_user ON instance_owners (tenant, user_name);

CREATE TABLE tokens (
    hash       TEXT    NOT NULL PRIMARY KEY,            -- SHA-256 of the token, hex
    user_name  TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    tenant     TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
) STRICT;

CREATE INDEX tokens_by_user ON tokens (user_name);

CREATE TABLE api_keys (
    hash       TEXT    NOT NULL PRIMARY KEY,            -- SHA-256 of the key, hex
    tenant     TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('owner', 'member', 'viewer')),
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant, name)
) STRICT;

-- Not tied to the tenants table: the log outlives a deleted tenant.
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    user_name TEXT,                                     -- NULL: unauthenticated
    tenant    TEXT,                                     -- NULL: no tenant resolved
    action    TEXT    NOT NULL,                         -- `POST /v1/groups`
    target    TEXT    NOT NULL,                         -- the request path
    source    TEXT,                                     -- peer address
    result    INTEGER NOT NULL                          -- HTTP status
) STRICT;

CREATE INDEX audit_by_tenant ON audit_log (tenant, id);

CREATE TABLE provider_credentials (
    tenant     TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    sealed     BLOB    NOT NULL,                        -- nonce || AES-256-GCM ciphertext
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) STRICT;
