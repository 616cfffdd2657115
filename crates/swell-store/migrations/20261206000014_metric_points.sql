-- The metric history of every group (one row per metrics interval: the mean of each
-- metric, as a JSON object, the running instances, the desired capacity) and of every
-- running instance (its CPU and memory reading), so that the exports of
-- `GET /v1/groups/{name}/metrics` and `…/instances/{id}/metrics` survive a restart.
-- Each worker writes one interval's rows in one transaction and prunes its rows older
-- than the retention (METRIC_POINTS_KEPT); they go with their group.
CREATE TABLE group_metric_points (
    tenant           TEXT    NOT NULL,
    group_name       TEXT    NOT NULL,
    at               INTEGER NOT NULL,
    running          INTEGER NOT NULL,
    desired_capacity INTEGER NOT NULL,
    metric_values    TEXT    NOT NULL,
    PRIMARY KEY (tenant, group_name, at),
    FOREIGN KEY (tenant, group_name) REFERENCES scaling_groups (tenant, name) ON DELETE CASCADE
) STRICT;

CREATE TABLE instance_metric_points (
    tenant      TEXT    NOT NULL,
    group_name  TEXT    NOT NULL,
    instance_id TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    cpu_percent REAL    NOT NULL,
    memory_mb   REAL    NOT NULL,
    PRIMARY KEY (tenant, group_name, instance_id, at),
    FOREIGN KEY (tenant, group_name) REFERENCES scaling_groups (tenant, name) ON DELETE CASCADE
) STRICT;
