-- Installs: every install an agent reports, whoever started it, with its
-- progress lines; and the package waiting on each server for each module.

ALTER TABLE modules ADD COLUMN pending_version TEXT;

CREATE TABLE installs (
    server_id       TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    install_id      TEXT NOT NULL,                -- unique per agent
    module          TEXT NOT NULL,
    from_version    TEXT,
    to_version      TEXT NOT NULL,
    command_id      TEXT,                         -- set when the controller ordered it
    state           TEXT NOT NULL,                -- running, succeeded, failed
    phase           TEXT,                         -- the phase under way, or the one that failed
    message         TEXT,
    downtime_ms     INTEGER,
    hook_output     TEXT,                         -- the failing hook's stderr, one line per line
    rolled_back     INTEGER NOT NULL DEFAULT 0,
    rollback_error  TEXT,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    PRIMARY KEY (server_id, install_id)
);
CREATE INDEX installs_by_module ON installs (server_id, module, started_at);

CREATE TABLE install_events (
    server_id   TEXT NOT NULL,
    install_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    at          TEXT NOT NULL,
    phase       TEXT,
    kind        TEXT NOT NULL,                    -- phase, step, stdout, stderr, warning
    text        TEXT NOT NULL,
    PRIMARY KEY (server_id, install_id, seq),
    FOREIGN KEY (server_id, install_id) REFERENCES installs (server_id, install_id) ON DELETE CASCADE
);
