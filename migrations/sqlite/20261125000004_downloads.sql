-- Where each server's download of a module's package stands.
ALTER TABLE modules ADD COLUMN download_state TEXT;     -- downloading, failed, refused; NULL otherwise
ALTER TABLE modules ADD COLUMN download_version TEXT;
ALTER TABLE modules ADD COLUMN download_detail TEXT;
