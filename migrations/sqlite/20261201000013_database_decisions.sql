-- no-transaction
-- A site rollback leaves an upgraded database as it is and waits for an
-- operator's decision (issue 14): a site and a step may be in
-- 'database_decision', a step in 'restoring_database', and a step records
-- who decided to restore its database. The audit trail gains a detail
-- (what a database restore discarded). Tables rebuilt as in
-- 20261201000011_checked_states.sql, SQLite's own recipe.

PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE rollout_sites_checked (
    rollout_id      INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    site            TEXT NOT NULL,
    wave            INTEGER NOT NULL,
    state           TEXT NOT NULL
                    CHECK (state IN ('waiting', 'scheduled', 'running', 'succeeded', 'failed',
                                     'rolling_back', 'rolled_back', 'rollback_failed', 'cancelled',
                                     'database_decision')),
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
                                          'rolled_back', 'rollback_failed', 'review',
                                          'database_decision', 'restoring_database')),
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      TEXT,
    command_id           TEXT,
    rollback_command_id  TEXT,
    ordered_at           TEXT,
    message              TEXT,
    started_at           TEXT,
    finished_at          TEXT,
    database_decided_by  TEXT,
    PRIMARY KEY (rollout_id, server_id, module),
    FOREIGN KEY (rollout_id, site) REFERENCES rollout_sites (rollout_id, site) ON DELETE CASCADE
);
INSERT INTO rollout_steps_checked
    SELECT rollout_id, site, server_id, module, layer, from_version, to_version, state, attempts,
           next_attempt_at, command_id, rollback_command_id, ordered_at, message, started_at,
           finished_at, NULL
    FROM rollout_steps;
DROP TABLE rollout_steps;
ALTER TABLE rollout_steps_checked RENAME TO rollout_steps;

ALTER TABLE audit ADD COLUMN detail TEXT;

COMMIT;
PRAGMA foreign_keys = ON;
