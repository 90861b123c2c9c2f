-- The fleet: customer sites, the servers that make them up, the modules each
-- server hosts, and what each server last reported as wrong.

CREATE TABLE sites (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

CREATE TABLE servers (
    id                TEXT PRIMARY KEY,             -- the agent's server id
    site_id           INTEGER NOT NULL REFERENCES sites (id),
    hostname          TEXT NOT NULL,
    os                TEXT NOT NULL,
    agent_version     TEXT NOT NULL,
    protocol_version  INTEGER NOT NULL,
    peer_address      TEXT,
    online            INTEGER NOT NULL DEFAULT 0,
    first_seen_at     TEXT NOT NULL,
    connected_at      TEXT,
    last_seen_at      TEXT NOT NULL,
    went_silent_at    TEXT,                         -- set when it went offline
    offline_reason    TEXT
);
CREATE INDEX servers_by_site ON servers (site_id);

CREATE TABLE modules (
    server_id          TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    kind               TEXT NOT NULL,
    install_path       TEXT NOT NULL,
    installed_version  TEXT,
    state              TEXT NOT NULL,
    detail             TEXT NOT NULL DEFAULT '',
    updated_at         TEXT NOT NULL,
    PRIMARY KEY (server_id, name)
);

CREATE TABLE server_problems (
    server_id  TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    file       TEXT,
    line       INTEGER,
    message    TEXT NOT NULL,
    PRIMARY KEY (server_id, position)
);
