-- Rollouts: a release brought to a set of sites with a strategy. The state
-- machine lives here, so a restarted controller resumes where it was.

-- A site's maintenance windows, in its own time zone.
CREATE TABLE site_schedules (
    site_id     INTEGER PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    time_zone   TEXT NOT NULL,
    windows     TEXT NOT NULL,                    -- JSON: [{days, start, end}]
    updated_at  TEXT NOT NULL
);

CREATE TABLE rollouts (
    id                     INTEGER PRIMARY KEY,
    release                TEXT NOT NULL REFERENCES releases (version),
    strategy               TEXT NOT NULL,         -- JSON, as validated at creation
    state                  TEXT NOT NULL,         -- running, paused, cancelled, succeeded, failed
    reason                 TEXT,                  -- why it is paused, cancelled or failed
    opened_wave            INTEGER NOT NULL DEFAULT 1,
    wave_ready_at          TEXT,                  -- when the next wave may open (pause between waves)
    acknowledged_failures  INTEGER NOT NULL DEFAULT 0,  -- failed sites an operator resumed past
    created_by             TEXT NOT NULL,
    created_at             TEXT NOT NULL,
    finished_at            TEXT
);

CREATE TABLE rollout_sites (
    rollout_id      INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    site            TEXT NOT NULL,
    wave            INTEGER NOT NULL,
    -- waiting (its wave has not come), scheduled (waiting for its window),
    -- running, succeeded, failed (waiting for an operator), rolling_back,
    -- rolled_back, rollback_failed, cancelled
    state           TEXT NOT NULL,
    message         TEXT,
    planned_start   TEXT,
    planned_end     TEXT,
    notice_sent_at  TEXT,
    notice_result   TEXT,
    started_at      TEXT,
    finished_at     TEXT,
    PRIMARY KEY (rollout_id, site)
);

CREATE TABLE rollout_steps (
    rollout_id           INTEGER NOT NULL,
    site                 TEXT NOT NULL,
    server_id            TEXT NOT NULL,
    module               TEXT NOT NULL,
    layer                INTEGER NOT NULL,
    from_version         TEXT,
    to_version           TEXT NOT NULL,
    -- pending, starting, running, succeeded, skipped, failed, excluded,
    -- cancelled, rolling_back, rolled_back, rollback_failed
    state                TEXT NOT NULL,
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      TEXT,
    command_id           TEXT,
    rollback_command_id  TEXT,
    ordered_at           TEXT,                -- when the latest install or restore was ordered
    message              TEXT,
    started_at           TEXT,
    finished_at          TEXT,
    PRIMARY KEY (rollout_id, server_id, module),
    FOREIGN KEY (rollout_id, site) REFERENCES rollout_sites (rollout_id, site) ON DELETE CASCADE
);

-- Every transition, with who and when.
CREATE TABLE rollout_log (
    rollout_id  INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    PRIMARY KEY (rollout_id, seq)
);

CREATE INDEX installs_by_command ON installs (command_id);
CREATE INDEX installs_for_estimates ON installs (state, module, finished_at);
