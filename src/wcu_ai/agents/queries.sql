-- Named queries of the agents. Parameters are named.

-- name: metrics_task_queued
-- One queued calculation counts every run before it starts: runs need not each add one.
-- The partial index ai_server_tasks_queued_idx keeps this a scan of the queued tasks only.
SELECT EXISTS (
    SELECT 1 FROM ai_server_tasks WHERE status = 'queued' AND task_type = %(task_type)s
) AS queued;

-- name: lock_session
-- One run at a time per session (migration 0005). Taken unless a live run holds it; a lock whose
-- lease ran out (its API process died) is taken over. No row back: another run holds it.
INSERT INTO ai_agent_session_locks AS l (session_id, holder, expires_at)
VALUES (%(session_id)s, %(holder)s, now() + make_interval(secs => %(lease)s))
ON CONFLICT (session_id) DO UPDATE
SET holder = EXCLUDED.holder, acquired_at = now(), expires_at = EXCLUDED.expires_at
WHERE l.expires_at < now()
RETURNING holder;

-- name: bound_lock_wait
-- For the rest of this transaction a statement waiting for a row or table lock gives up after
-- sessions.LOCK_TIMEOUT_SECONDS: a locked ai_sessions or lock table fails the
-- run at once instead of holding a pooled connection until the statement timeout.
SELECT set_config('lock_timeout', %(lock_timeout)s, true);

-- name: session_lock_held
-- The fencing token of a session write, in the write's transaction: no row back, another run
-- took the session (this run's lease ran out). FOR UPDATE holds off a takeover until the write
-- has committed, so the next run reads what this one wrote.
SELECT holder FROM ai_agent_session_locks
WHERE session_id = %(session_id)s AND holder = %(holder)s
FOR UPDATE;

-- name: store_session
-- Agno's own upsert of an agent session (AsyncPostgresDb.upsert_session, Agno 2.9), run after
-- session_lock_held in one transaction. No row back: the session is another user's.
INSERT INTO ai_sessions AS s (session_id, session_type, agent_id, user_id, runs, agent_data,
                              session_data, summary, metadata, created_at, updated_at)
VALUES (%(session_id)s, 'agent', %(agent_id)s, %(user_id)s, %(runs)s, %(agent_data)s,
        %(session_data)s, %(summary)s, %(metadata)s, %(created_at)s, %(created_at)s)
ON CONFLICT (session_id) DO UPDATE
SET agent_id = EXCLUDED.agent_id, user_id = EXCLUDED.user_id, agent_data = EXCLUDED.agent_data,
    session_data = EXCLUDED.session_data, summary = EXCLUDED.summary,
    metadata = EXCLUDED.metadata, runs = EXCLUDED.runs,
    updated_at = extract(epoch FROM now())::bigint
WHERE s.user_id = EXCLUDED.user_id OR s.user_id IS NULL
RETURNING session_id;

-- name: renew_session_lock
-- No row back: the lease ran out and another run took the session.
UPDATE ai_agent_session_locks SET expires_at = now() + make_interval(secs => %(lease)s)
WHERE session_id = %(session_id)s AND holder = %(holder)s
RETURNING holder;

-- name: unlock_session
DELETE FROM ai_agent_session_locks WHERE session_id = %(session_id)s AND holder = %(holder)s;

-- name: claim_session
-- A new session is owned from its first request: its row is written before the run, so another
-- user naming the same id finds it taken. Run under the session's lock, so claims never race.
-- The columns and values are Agno's own (SessionType.AGENT, epoch seconds); Agno's upsert at the
-- end of the run updates this row when its user_id matches.
INSERT INTO ai_sessions (session_id, session_type, agent_id, user_id, created_at, updated_at)
VALUES (%(session_id)s, 'agent', %(agent_id)s, %(user_id)s,
        extract(epoch FROM now())::bigint, extract(epoch FROM now())::bigint)
ON CONFLICT (session_id) DO NOTHING;

-- name: session
-- Every column Agno's AgentSession reads: a run starts from this row and Agno writes it all back.
SELECT session_id, session_type, agent_id, user_id, session_data, agent_data, metadata, runs,
       summary, created_at, updated_at
FROM ai_sessions
WHERE session_id = %(session_id)s;

-- name: user_sessions
SELECT session_id, session_type, agent_id, user_id, session_data, agent_data, metadata, runs,
       summary, created_at, updated_at
FROM ai_sessions
WHERE session_type = 'agent' AND agent_id = %(agent_id)s AND user_id = %(user_id)s
ORDER BY updated_at DESC NULLS LAST, session_id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: delete_session
-- Only the owner's: a delete names its user (issue 11).
DELETE FROM ai_sessions
WHERE session_id = %(session_id)s AND session_type = 'agent' AND agent_id = %(agent_id)s
  AND user_id = %(user_id)s;

-- name: user_memories
SELECT memory_id, memory, topics, agent_id, created_at, updated_at
FROM ai_memories
WHERE user_id = %(user_id)s
ORDER BY updated_at DESC NULLS LAST, memory_id
LIMIT %(limit)s OFFSET %(offset)s;
