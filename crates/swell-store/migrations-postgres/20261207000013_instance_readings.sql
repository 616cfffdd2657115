-- An instance's metric history moves into its group's points: each group point holds
-- its instances' readings as a JSON array of [instance_id, cpu_percent, memory_mb].
-- One row per group and metrics interval instead of one more per instance (see the
-- SQLite migration of the same name for the figures).
-- Existing readings are carried over into the point of their group and time (the
-- server always wrote them with it, in the same transaction).
ALTER TABLE group_metric_points ADD COLUMN instance_readings TEXT NOT NULL DEFAULT '[]';

UPDATE group_metric_points AS g SET instance_readings = r.readings
FROM (
    SELECT tenant, group_name, at,
           json_agg(json_build_array(instance_id, cpu_percent, memory_mb)
                    ORDER BY instance_id)::text AS readings
    FROM instance_metric_points
    GROUP BY tenant, group_name, at
) AS r
WHERE r.tenant = g.tenant AND r.group_name = g.group_name AND r.at = g.at;

DROP TABLE instance_metric_points;
