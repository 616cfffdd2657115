-- Suspended autoscaling (issue 20), as in SQLite's 20261206000007_suspended: while
-- `suspended_at` is set the policies change no desired capacity.

ALTER TABLE scaling_groups ADD COLUMN suspended_at BIGINT;
