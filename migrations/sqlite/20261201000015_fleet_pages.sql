-- The fleet a page at a time, filtered in SQL (issue 16): the keyset
-- order (site, then id) and the filters by module and version have
-- indexes; counts by version read the same index.
CREATE INDEX servers_by_site_and_id ON servers (site_id, id);
CREATE INDEX modules_by_name_and_version ON modules (name, installed_version);
