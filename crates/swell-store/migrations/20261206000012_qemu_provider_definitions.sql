-- Provider definitions of kind `qemu` (issue 19): an admin defines qemu providers at
-- run time (their hypervisor hosts and placement) like docker and openstack ones.
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt with the
-- same columns, rows and index. No table references it.

CREATE TABLE providers_new (
    name        TEXT    NOT NULL PRIMARY KEY,
    kind        TEXT    NOT NULL CHECK (kind IN ('process', 'docker', 'openstack', 'qemu')),
    config      TEXT    NOT NULL DEFAULT '{}',
    tenant      TEXT    REFERENCES tenants (id) ON DELETE CASCADE,
    credentials BLOB,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

INSERT INTO providers_new (name, kind, config, tenant, credentials, created_at, updated_at)
    SELECT name, kind, config, tenant, credentials, created_at, updated_at FROM providers;

DROP TABLE providers;
ALTER TABLE providers_new RENAME TO providers;
CREATE INDEX providers_by_tenant ON providers (tenant);
