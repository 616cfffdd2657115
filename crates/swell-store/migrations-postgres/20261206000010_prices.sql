-- Prices (issue 20, cost), as in SQLite's 20261206000013_prices: per provider and
-- size ('' = every size without its own price), from a time on; a change is a new row.

CREATE TABLE prices (
    provider       TEXT COLLATE "C" NOT NULL,
    size           TEXT COLLATE "C" NOT NULL DEFAULT '',
    effective_from BIGINT NOT NULL,
    per_hour       DOUBLE PRECISION NOT NULL CHECK (per_hour >= 0),
    set_at         BIGINT NOT NULL,
    PRIMARY KEY (provider, size, effective_from)
);

-- A period's instances of a group.
CREATE INDEX instances_by_group_created ON instances (tenant, group_name, created_at);
