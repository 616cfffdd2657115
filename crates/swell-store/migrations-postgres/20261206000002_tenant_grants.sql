-- The tenant boundary (issue 15), as in SQLite's 20261206000005_tenant_grants: what an
-- admin grants each tenant (one JSON document, TEXT like every other JSON column) and a
-- per-tenant limit on its groups. Only the bootstrap `default` tenant of an existing
-- store gets the bootstrap grants; every other tenant is granted nothing.

ALTER TABLE tenants ADD COLUMN grants     TEXT   NOT NULL DEFAULT '{}';
-- NULL: the service-wide default (settings `default_quota`) applies.
ALTER TABLE tenants ADD COLUMN max_groups BIGINT CHECK (max_groups >= 0);

UPDATE tenants
   SET grants = '{"providers":["process"],"listen":["127.0.0.1:1024-65535"],"images":[]}'
 WHERE id = 'default';
