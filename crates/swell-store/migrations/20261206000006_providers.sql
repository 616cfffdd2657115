-- Provider definitions (issue 15): the providers an admin defined by name
-- (`docker-rack1`, `openstack-prod`), beside the built-in `process`, `docker` and
-- `openstack` that `swell serve`'s flags configure. A definition is operator-wide
-- (`tenant` NULL, granted to tenants by name) or private to one tenant (its own
-- OpenStack project, say), and goes with that tenant.
--
-- `config` is the kind's settings as JSON (engines, endpoints; never a secret);
-- `credentials` the secret part, sealed (nonce || AES-256-GCM ciphertext, with the
-- definition's tenant and name as associated data).

CREATE TABLE providers (
    name        TEXT    NOT NULL PRIMARY KEY,
    kind        TEXT    NOT NULL CHECK (kind IN ('process', 'docker', 'openstack')),
    config      TEXT    NOT NULL DEFAULT '{}',
    tenant      TEXT    REFERENCES tenants (id) ON DELETE CASCADE,
    credentials BLOB,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX providers_by_tenant ON providers (tenant);
