-- no-transaction
-- The schema refuses a rollout, site or step state that does not exist
-- (controller/src/states.rs lists them). SQLite cannot add a CHECK to a
-- table, so each table is rebuilt with one, following SQLite's own recipe
-- (https://www.sqlite.org/lang_altertable.html#otheralter): foreign keys
-- off, one transaction, new table, copy, drop, rename, indexes, check.

PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE rollouts_checked (
    id                     INTEGER PRIMARY KEY,
    release                TEXT NOT NULL REFERENCES releases (version),
    strategy               TEXT NOT NULL,
    state                  TEXT NOT NULL
                           CHECK (state IN ('running', 'paused', 'cancelled', 'succeeded', 'failed')),
    reason                 TEXT,
    opened_wave            INTEGER NOT NULL DEFAULT 1,
    wave_ready_at          TEXT,
    acknowledged_failures  INTEGER NOT NULL DEFAULT 0,
    created_by             TEXT NOT NULL,
    created_at             TEXT NOT NULL,
    finished_at            TEXT
);
INSERT INTO rollouts_checked SELECT * FROM rollouts;
DROP TABLE rollouts;
ALTER TABLE rollouts_checked RENAME TO rollouts;
CREATE INDEX rollouts_unfinished ON rollouts (id) WHERE finished_at IS NULL;

CREATE TABLE rollout_sites_checked (
    rollout_id      INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    site            TEXT NOT NULL,
    wave            INTEGER NOT NULL,
    state           TEXT NOT NULL
                    CHECK (state IN ('waiting', 'scheduled', 'running', 'succeeded', 'failed',
                                     'rolling_back', 'rolled_back', 'rollback_failed', 'cancelled')),
    message         TEXT,
    planned_start   TEXT,
    planned_end     TEXT,
    notice_sent_at  TEXT,
    notice_result   TEXT,
    started_at      TEXT,
    finished_at     TEXT,
    PRIMARY KEY (rollout_id, site)
);
INSERT INTO rollout_sites_checked SELECT * FROM rollout_sites;
DROP TABLE rollout_sites;
ALTER TABLE rollout_sites_checked RENAME TO rollout_sites;

CREATE TABLE rollout_steps_checked (
    rollout_id           INTEGER NOT NULL,
    site                 TEXT NOT NULL,
    server_id            TEXT NOT NULL,
    module               TEXT NOT NULL,
    layer                INTEGER NOT NULL,
    from_version         TEXT,
    to_version           TEXT NOT NULL,
    state                TEXT NOT NULL
                         CHECK (state IN ('pending', 'starting', 'running', 'succeeded', 'skipped',
                                          'failed', 'excluded', 'cancelled', 'rolling_back',
                                          'rolled_back', 'rollback_failed', 'review')),
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      TEXT,
    command_id           TEXT,
    rollback_command_id  TEXT,
    ordered_at           TEXT,
    message              TEXT,
    started_at           TEXT,
    finished_at          TEXT,
    PRIMARY KEY (rollout_id, server_id, module),
    FOREIGN KEY (rollout_id, site) REFERENCES rollout_sites (rollout_id, site) ON DELETE CASCADE
);
INSERT INTO rollout_steps_checked SELECT * FROM rollout_steps;
DROP TABLE rollout_steps;
ALTER TABLE rollout_steps_checked RENAME TO rollout_steps;

COMMIT;
PRAGMA foreign_keys = ON;
