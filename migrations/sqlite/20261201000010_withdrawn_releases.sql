-- A release an admin withdrew: its packages are no longer offered, agents
-- drop them, and no rollout of it starts.
ALTER TABLE releases ADD COLUMN withdrawn_at TEXT;
ALTER TABLE releases ADD COLUMN withdrawn_by TEXT;
ALTER TABLE releases ADD COLUMN withdrawn_reason TEXT;
