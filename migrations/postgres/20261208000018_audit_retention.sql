-- The audit trail's retention: entries past their age are exported to a
-- file, then pruned. Each pruning is recorded here, append-only, and the
-- trail refuses to delete any entry a pruning does not cover.

CREATE TABLE audit_pruned (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,   -- when it was pruned
    pruned_before TIMESTAMPTZ NOT NULL,   -- the entries before this time were
    up_to_seq  BIGINT NOT NULL,        -- the last entry pruned
    entries    BIGINT NOT NULL,        -- how many
    archive    TEXT COLLATE "C" NOT NULL  -- the file they were exported to
);

CREATE FUNCTION audit_pruned_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the record of the audit trail''s prunings is append-only';
END;
$$;
CREATE TRIGGER audit_pruned_no_update BEFORE UPDATE ON audit_pruned
    FOR EACH ROW EXECUTE FUNCTION audit_pruned_append_only();
CREATE TRIGGER audit_pruned_no_delete BEFORE DELETE ON audit_pruned
    FOR EACH ROW EXECUTE FUNCTION audit_pruned_append_only();
CREATE TRIGGER audit_pruned_no_truncate BEFORE TRUNCATE ON audit_pruned
    FOR EACH STATEMENT EXECUTE FUNCTION audit_pruned_append_only();

CREATE FUNCTION audit_delete_pruned_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq <= COALESCE((SELECT MAX(up_to_seq) FROM audit_pruned), 0) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit trail is append-only: only entries exported and past their retention are pruned';
END;
$$;
DROP TRIGGER audit_no_delete ON audit;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_delete_pruned_only();
