-- What went wrong after an install's new version was in place, for a person
-- (a backup that could not be written, and where the old version is), one
-- per line.
ALTER TABLE installs ADD COLUMN warnings TEXT;
