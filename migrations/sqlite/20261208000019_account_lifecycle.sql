-- Accounts have a lifecycle: an admin disables one (its sessions and the
-- API tokens it made are refused at once) and enables it again, and a
-- password set by someone else (the first admin's, made at first start, or
-- one an admin reset) must be changed at the next sign-in.

ALTER TABLE accounts ADD COLUMN disabled_at TEXT;
ALTER TABLE accounts ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;
