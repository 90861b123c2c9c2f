-- no-transaction
-- An agent package is built for one platform (linux-x86_64,
-- windows-x86_64), and one release carries one per platform: a module
-- version is unique per platform. '' is a package for every platform (every
-- module package that is not the agent). SQLite cannot change a table's
-- UNIQUE constraint, so the table is rebuilt following SQLite's own recipe
-- (https://www.sqlite.org/lang_altertable.html#otheralter), as in migration 11.

PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE packages_by_platform (
    sha256      TEXT PRIMARY KEY,
    module      TEXT NOT NULL,
    version     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    size        INTEGER,                       -- NULL when only a URL is known
    signature   TEXT NOT NULL,                 -- Ed25519, hex, over flotilla-package-v1:<sha256>
    url         TEXT,                          -- NULL when served by this controller
    created_at  TEXT NOT NULL,
    platform    TEXT NOT NULL DEFAULT '',      -- '' for every platform
    UNIQUE (module, version, platform)         -- one content per module version and platform, ever
);
-- Agent packages published before were Linux's: only Linux agents updated
-- themselves until now.
INSERT INTO packages_by_platform (sha256, module, version, kind, size, signature, url, created_at, platform)
    SELECT sha256, module, version, kind, size, signature, url, created_at,
           CASE WHEN module = 'flotilla-agent' THEN 'linux-x86_64' ELSE '' END
    FROM packages;
DROP TABLE packages;
ALTER TABLE packages_by_platform RENAME TO packages;

COMMIT;
PRAGMA foreign_keys = ON;
