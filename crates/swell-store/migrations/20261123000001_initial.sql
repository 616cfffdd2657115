-- Swell's initial schema (SQLite). Times are integer milliseconds since the Unix epoch;
-- booleans are 0/1; every tenant-owned row carries its tenant.

CREATE TABLE tenants (
    id         TEXT    NOT NULL PRIMARY KEY,
    created_at INTEGER NOT NULL
) STRICT;

-- `scaling_groups`, not `groups`: GROUPS is an SQL keyword (window frames).
CREATE TABLE scaling_groups (
    tenant           TEXT    NOT NULL REFERENCES tenants (id),
    name             TEXT    NOT NULL,
    spec             TEXT    NOT NULL,                -- GroupSpec as JSON
    desired_capacity INTEGER NOT NULL CHECK (desired_capacity >= 0),
    last_scaling_at  INTEGER,
    deleting         INTEGER NOT NULL DEFAULT 0 CHECK (deleting IN (0, 1)),
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) STRICT;

CREATE TABLE instances (
    tenant        TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    group_name    TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    lifecycle     TEXT    NOT NULL,
    created_order INTEGER NOT NULL,
    provider      TEXT    NOT NULL,
    host          TEXT,
    address       TEXT,
    native_id     TEXT,
    protected     INTEGER NOT NULL DEFAULT 0 CHECK (protected IN (0, 1)),
    status_reason TEXT,
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, group_name, created_order),
    FOREIGN KEY (tenant, group_name) REFERENCES scaling_groups (tenant, name) ON DELETE CASCADE
) STRICT;

-- The reconciler's scan of live instances across tenants.
CREATE INDEX instances_by_status ON instances (status);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant      TEXT    NOT NULL,
    group_name  TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    instance_id TEXT,
    cause       TEXT,                                 -- Cause as JSON
    message     TEXT    NOT NULL
) STRICT;

CREATE INDEX events_by_group_id ON events (tenant, group_name, id);
CREATE INDEX events_by_group_at ON events (tenant, group_name, at);
