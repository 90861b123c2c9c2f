-- The audit trail's retention: entries past their age are exported to a
-- file, then pruned. Each pruning is recorded here, append-only, and the
-- trail refuses to delete any entry a pruning does not cover.

CREATE TABLE audit_pruned (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,      -- when it was pruned
    pruned_before TEXT NOT NULL,   -- the entries before this time were
    up_to_seq  INTEGER NOT NULL,   -- the last entry pruned
    entries    INTEGER NOT NULL,   -- how many
    archive    TEXT NOT NULL       -- the file they were exported to
);

CREATE TRIGGER audit_pruned_no_update BEFORE UPDATE ON audit_pruned
BEGIN
    SELECT RAISE(ABORT, 'the record of the audit trail''s prunings is append-only');
END;

CREATE TRIGGER audit_pruned_no_delete BEFORE DELETE ON audit_pruned
BEGIN
    SELECT RAISE(ABORT, 'the record of the audit trail''s prunings is append-only');
END;

DROP TRIGGER audit_no_delete;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
WHEN OLD.seq > COALESCE((SELECT MAX(up_to_seq) FROM audit_pruned), 0)
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: only entries exported and past their retention are pruned');
END;
