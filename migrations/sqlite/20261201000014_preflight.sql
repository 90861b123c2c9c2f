-- no-transaction
-- A rollout checks every server of a site before taking it down (issue
-- 15): a site may be 'preflight_failed', and records the servers' answers,
-- when they were asked, and who overrode a failed preflight. Rebuilt as in
-- 20261201000011_checked_states.sql, SQLite's own recipe.

PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE rollout_sites_checked (
    rollout_id             INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    site                   TEXT NOT NULL,
    wave                   INTEGER NOT NULL,
    state                  TEXT NOT NULL
                           CHECK (state IN ('waiting', 'scheduled', 'running', 'succeeded', 'failed',
                                            'rolling_back', 'rolled_back', 'rollback_failed', 'cancelled',
                                            'database_decision', 'preflight_failed')),
    message                TEXT,
    planned_start          TEXT,
    planned_end            TEXT,
    notice_sent_at         TEXT,
    notice_result          TEXT,
    started_at             TEXT,
    finished_at            TEXT,
    -- JSON: per server, when it answered, its blocking failures and warnings.
    preflight              TEXT,
    preflight_at           TEXT,
    preflight_override_by  TEXT,
    PRIMARY KEY (rollout_id, site)
);
INSERT INTO rollout_sites_checked
    SELECT rollout_id, site, wave, state, message, planned_start, planned_end, notice_sent_at,
           notice_result, started_at, finished_at, NULL, NULL, NULL
    FROM rollout_sites;
DROP TABLE rollout_sites;
ALTER TABLE rollout_sites_checked RENAME TO rollout_sites;

COMMIT;
PRAGMA foreign_keys = ON;
