-- Agents' enrollment and certificates.
--
-- An enrollment token (stored as its sha256) lets one agent, once and
-- before it expires, have its key certified as one server of one site.
-- Every certificate the controller issues is recorded; revoking a server
-- revokes its certificates and refuses the server until it is enrolled
-- again with a new token.

CREATE TABLE enrollments (
    id          INTEGER PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    server_id   TEXT NOT NULL,
    site        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT,
    used_from   TEXT
);

CREATE TABLE agent_certificates (
    serial      TEXT PRIMARY KEY,
    server_id   TEXT NOT NULL,
    site        TEXT NOT NULL,
    issued_at   TEXT NOT NULL,
    not_after   TEXT NOT NULL,
    -- 'enrolled' or 'renewed'
    how         TEXT NOT NULL,
    revoked_at  TEXT
);

CREATE INDEX agent_certificates_server ON agent_certificates (server_id);

CREATE TABLE revoked_servers (
    server_id   TEXT PRIMARY KEY,
    revoked_at  TEXT NOT NULL,
    revoked_by  TEXT NOT NULL
);
