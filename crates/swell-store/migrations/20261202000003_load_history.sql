-- Five-minute summaries of each group's load per metric, so that forecasting policies
-- keep their daily and weekly memory across restarts and edits of the group. The
-- group's worker prunes its rows older than the retention (16 days).
CREATE TABLE load_history (
    tenant     TEXT    NOT NULL,
    group_name TEXT    NOT NULL,
    metric     TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    mean       REAL    NOT NULL,
    max        REAL    NOT NULL,
    PRIMARY KEY (tenant, group_name, metric, at),
    FOREIGN KEY (tenant, group_name) REFERENCES scaling_groups (tenant, name) ON DELETE CASCADE
) STRICT;
