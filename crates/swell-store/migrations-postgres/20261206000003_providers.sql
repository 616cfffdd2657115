-- Provider definitions (issue 15), as in SQLite's 20261206000006_providers: the
-- providers an admin defined by name, operator-wide (`tenant` NULL) or private to one
-- tenant; `config` is JSON text (never a secret), `credentials` the sealed secret.

CREATE TABLE providers (
    name        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    kind        TEXT   NOT NULL CHECK (kind IN ('process', 'docker', 'openstack')),
    config      TEXT   NOT NULL DEFAULT '{}',
    tenant      TEXT COLLATE "C" REFERENCES tenants (id) ON DELETE CASCADE,
    credentials BYTEA,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE INDEX providers_by_tenant ON providers (tenant);
