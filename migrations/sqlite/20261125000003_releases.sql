-- Releases: module packages (content-addressed by sha256, stored here or at
-- a URL), and the releases that group them with their notes.

CREATE TABLE packages (
    sha256      TEXT PRIMARY KEY,
    module      TEXT NOT NULL,
    version     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    size        INTEGER,                       -- NULL when only a URL is known
    signature   TEXT NOT NULL,                 -- Ed25519, hex, over flotilla-package-v1:<sha256>
    url         TEXT,                          -- NULL when served by this controller
    created_at  TEXT NOT NULL,
    UNIQUE (module, version)                   -- one content per module version, ever
);

CREATE TABLE releases (
    version     TEXT PRIMARY KEY,
    notes       TEXT NOT NULL,                 -- Markdown
    created_at  TEXT NOT NULL
);

CREATE TABLE release_packages (
    release  TEXT NOT NULL REFERENCES releases (version) ON DELETE CASCADE,
    sha256   TEXT NOT NULL REFERENCES packages (sha256),
    PRIMARY KEY (release, sha256)
);
