-- Requests between controllers sharing one database (PostgreSQL): a
-- command for an agent connected to another controller, an operator's
-- action for the controller that drives the rollouts. Kept here too so
-- that both engines have one schema; a lone SQLite controller never
-- writes it.
CREATE TABLE relay (
    id          INTEGER PRIMARY KEY,
    target      TEXT NOT NULL,      -- 'server:<id>' or 'engine'
    request     TEXT NOT NULL,      -- JSON
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    taken_by    TEXT,               -- the controller carrying it out
    reply       TEXT,               -- JSON
    replied_at  TEXT
);
CREATE INDEX relay_waiting ON relay (target) WHERE taken_by IS NULL;
