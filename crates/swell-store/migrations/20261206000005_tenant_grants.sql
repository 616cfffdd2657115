-- The tenant boundary (issue 15): what an admin grants each tenant, and a per-tenant
-- limit on its groups.
--
-- `grants` is one JSON document: {"providers": [names], "listen": ["127.0.0.1:20000-20099"],
-- "images": ["acme/*"]}. A tenant is granted nothing until an admin grants it; on an
-- existing store only the bootstrap `default` tenant gets the bootstrap grants (the
-- `process` provider and loopback ports 1024 and up), so the Quickstart keeps working.
-- Every other existing tenant must be granted what its groups use before they can be
-- created or updated again (their running groups are left as they are).

ALTER TABLE tenants ADD COLUMN grants     TEXT    NOT NULL DEFAULT '{}';
-- NULL: the service-wide default (settings `default_quota`) applies.
ALTER TABLE tenants ADD COLUMN max_groups INTEGER CHECK (max_groups >= 0);

UPDATE tenants
   SET grants = '{"providers":["process"],"listen":["127.0.0.1:1024-65535"],"images":[]}'
 WHERE id = 'default';
