-- Why: one agent run at a time per session (issue 11). Agno reads a session, appends the new
-- run and writes the whole runs list back, so two runs at once in one session lost one turn.
-- The API holds a row here, keyed by the session, for the length of a run and renews it every
-- third of WCU_AGENT_SESSION_LEASE_SECONDS; a second run of the session waits for the row to go
-- (WCU_AGENT_SESSION_WAIT_SECONDS), then is answered 409 with Retry-After.
-- A row and not an advisory lock: it holds no connection while the model thinks (minutes, and
-- the pool is shared with every other request), it works through a pooler in transaction mode,
-- and the lease frees the session of an API process that died mid-run.
-- session_id has no foreign key: a session's first run takes the lock before the session's row
-- exists, and ai_sessions is Agno's table (created by the runner before the migrations).
-- migrate:up
CREATE TABLE ai_agent_session_locks (
    session_id  text        PRIMARY KEY,
    holder      uuid        NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

-- migrate:down
DROP TABLE ai_agent_session_locks;
