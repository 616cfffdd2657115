-- Prices (issue 20, cost): what one instance-hour of a provider costs, per size where
-- the provider has sizes (an OpenStack flavor; '' = every size without its own price),
-- from a time on. A change is a new row, so what the past cost never changes; the
-- price in force at a moment is the latest row of the size at or before it, else the
-- latest provider-wide one. Cost is computed from the instance rows (created_at to
-- the terminated/failed row's updated_at), which are kept as long as their group.

CREATE TABLE prices (
    provider       TEXT    NOT NULL,
    size           TEXT    NOT NULL DEFAULT '',
    effective_from INTEGER NOT NULL,
    per_hour       REAL    NOT NULL CHECK (per_hour >= 0),
    set_at         INTEGER NOT NULL,
    PRIMARY KEY (provider, size, effective_from)
) STRICT;

-- A period's instances of a group.
CREATE INDEX instances_by_group_created ON instances (tenant, group_name, created_at);
