-- Which connection a server's online state belongs to. Every connection gets
-- a session number larger than any before it (across controller restarts);
-- a state write from an older connection is conditioned on its own number
-- and so can never overwrite a newer connection's.
ALTER TABLE servers ADD COLUMN session INTEGER NOT NULL DEFAULT 0;

-- The engine looks only at unfinished rollouts.
CREATE INDEX rollouts_unfinished ON rollouts (id) WHERE finished_at IS NULL;
