-- Suspended autoscaling (issue 20): while `suspended_at` is set, the group's policies
-- still evaluate and record what they would have done (`would_scale` events), but
-- change no desired capacity; a manual desired capacity still applies. A column, not
-- a field of the group document, so that re-applying a document neither suspends nor
-- resumes a group (AWS's suspended processes are state, not configuration).

ALTER TABLE scaling_groups ADD COLUMN suspended_at INTEGER;
