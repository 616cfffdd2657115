-- A group's live instances (neither terminated nor failed) in creation order: what the
-- group's worker reads at every reconcile. A group keeps the rows of every instance it
-- ever had (its history), so without this index that read walked them all and its cost
-- grew with the group's age, not its size.
CREATE INDEX instances_live_by_group ON instances (tenant, group_name, created_order)
    WHERE status NOT IN ('terminated', 'failed');
