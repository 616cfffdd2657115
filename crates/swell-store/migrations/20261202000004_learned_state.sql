-- What each forecasting policy of a group has learned beyond its load history (the
-- record of its forecast errors), one JSON document per policy, so that a restart or an
-- edit of the group does not send it back to its cold start. The group's worker replaces
-- the rows every five minutes and when it stops.
CREATE TABLE learned_state (
    tenant     TEXT    NOT NULL,
    group_name TEXT    NOT NULL,
    policy     TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    saved_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant, group_name, policy),
    FOREIGN KEY (tenant, group_name) REFERENCES scaling_groups (tenant, name) ON DELETE CASCADE
) STRICT;
