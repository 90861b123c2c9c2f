-- The audit trail: every change made through the API, every sign-in (and
-- every refusal), with who, what, when and from where. Append-only: the
-- triggers refuse any UPDATE or DELETE, whoever asks.

CREATE TABLE audit (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    at       TEXT NOT NULL,
    actor    TEXT NOT NULL,      -- the account or token; "anonymous" when none
    action   TEXT NOT NULL,      -- the operation: "POST /api/v1/rollouts/{id}/pause"
    target   TEXT NOT NULL,      -- the path as called: "/api/v1/rollouts/7/pause"
    outcome  INTEGER NOT NULL,   -- the HTTP status answered
    source   TEXT NOT NULL       -- the caller's address
);
CREATE INDEX audit_by_actor ON audit (actor, seq);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
