-- Named queries on ai_server_tasks, loaded once by wcu_ai.tasks.queue. Parameters are named.
-- Writes that end an attempt are guarded by locked_by and attempts: a runner that lost its
-- lease can never overwrite the outcome of the attempt that replaced it.

-- name: enqueue
INSERT INTO ai_server_tasks (task_type, payload, max_attempts, run_after)
VALUES (%(task_type)s, %(payload)s, %(max_attempts)s, now() + make_interval(secs => %(delay)s))
RETURNING id;

-- name: claim
-- Due queued tasks and tasks whose lease expired (their runner died), oldest due first.
-- Each kind is read through its own partial index, up to `limit` of each, and the oldest `limit`
-- of those are claimed: one WHERE with an OR of the two scanned and sorted every runnable row on
-- every claim (6 ms at 30,000 queued, growing with the backlog; this is 0.15 ms).
-- SKIP LOCKED: a claim never waits on, nor takes, a row another transaction is claiming. A row
-- locked here but not among the oldest `limit` is unlocked when the claim commits.
WITH due AS (
    SELECT id, run_after, created_at FROM ai_server_tasks
    WHERE status = 'queued' AND run_after <= now()
    ORDER BY run_after, created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), expired AS (
    SELECT id, run_after, created_at FROM ai_server_tasks
    WHERE status = 'running' AND lease_expires_at < now() AND attempts < max_attempts
    ORDER BY run_after, created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id FROM (SELECT * FROM due UNION ALL SELECT * FROM expired) AS runnable
    ORDER BY run_after, created_at
    LIMIT %(limit)s
)
UPDATE ai_server_tasks AS t
SET status = 'running', attempts = t.attempts + 1, locked_by = %(runner)s,
    lease_expires_at = now() + make_interval(secs => %(lease)s),
    started_at = now(), updated_at = now()
FROM picked WHERE t.id = picked.id
RETURNING t.id, t.task_type, t.payload::text AS payload, t.status, t.attempts, t.max_attempts, t.run_after,
          t.lease_expires_at, t.locked_by, t.last_error, t.result, t.created_at, t.updated_at,
          t.started_at, t.finished_at;

-- name: fail_expired
-- The runner died during the last allowed attempt: nobody will take the task again.
UPDATE ai_server_tasks
SET status = 'failed', finished_at = now(), updated_at = now(), lease_expires_at = NULL,
    last_error = 'the runner working this task stopped without finishing it (lease expired) on the last allowed attempt'
WHERE status = 'running' AND lease_expires_at < now() AND attempts >= max_attempts;

-- name: next_due_in
SELECT extract(epoch FROM min(run_after) - now())::float8 AS due_in
FROM ai_server_tasks WHERE status = 'queued';

-- name: extend_leases
-- Renews the leases this runner still holds (status 'running' in the answer) and reports the
-- tasks an operator cancelled under it (cancel keeps locked_by), so the runner can tell a cancel
-- from a lease another runner took; a task in neither list is lost.
WITH renewed AS (
    UPDATE ai_server_tasks SET lease_expires_at = now() + make_interval(secs => %(lease)s)
    WHERE id = ANY(%(ids)s) AND locked_by = %(runner)s AND status = 'running'
    RETURNING id, status
)
SELECT id, status FROM renewed
UNION ALL
SELECT id, status FROM ai_server_tasks
WHERE id = ANY(%(ids)s) AND locked_by = %(runner)s AND status = 'cancelled';

-- name: complete_many
-- Several attempts' outcomes in one statement, each row guarded like `complete`: the runner
-- writes together the completions that arrive while its previous write is in flight. The
-- outcomes are one JSON array of {id, attempts, result} (-> keeps a JSON null a JSON null).
UPDATE ai_server_tasks AS t
SET status = 'succeeded', result = done.result, last_error = NULL, finished_at = now(), updated_at = now(),
    lease_expires_at = NULL
FROM (
    SELECT (o ->> 'id')::uuid AS id, (o ->> 'attempts')::integer AS attempts, o -> 'result' AS result
    FROM jsonb_array_elements(%(outcomes)s::jsonb) AS o
) AS done
WHERE t.id = done.id AND t.locked_by = %(runner)s AND t.attempts = done.attempts AND t.status = 'running'
RETURNING t.id;

-- name: retry_later
UPDATE ai_server_tasks
SET status = 'queued', last_error = %(error)s, locked_by = NULL, lease_expires_at = NULL,
    run_after = now() + make_interval(secs => %(delay)s), updated_at = now()
WHERE id = %(id)s AND locked_by = %(runner)s AND attempts = %(attempts)s AND status = 'running';

-- name: fail
UPDATE ai_server_tasks
SET status = 'failed', last_error = %(error)s, finished_at = now(), updated_at = now(), lease_expires_at = NULL
WHERE id = %(id)s AND locked_by = %(runner)s AND attempts = %(attempts)s AND status = 'running';

-- name: release
-- The runner is shutting down: back to the queue, the attempt not spent.
UPDATE ai_server_tasks
SET status = 'queued', attempts = attempts - 1, locked_by = NULL, lease_expires_at = NULL,
    started_at = NULL, updated_at = now(), run_after = now()
WHERE id = %(id)s AND locked_by = %(runner)s AND attempts = %(attempts)s AND status = 'running';

-- name: get
SELECT id, task_type, payload, status, attempts, max_attempts, run_after, lease_expires_at, locked_by,
       last_error, result, created_at, updated_at, started_at, finished_at
FROM ai_server_tasks WHERE id = %(id)s;

-- name: list
-- Each filter is optional (NULL = any). Paging is keyset on (created_at, id): ties between rows
-- inserted by one transaction are split by id.
SELECT id, task_type, payload, status, attempts, max_attempts, run_after, lease_expires_at, locked_by,
       last_error, result, created_at, updated_at, started_at, finished_at
FROM ai_server_tasks
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(task_type)s::text IS NULL OR task_type = %(task_type)s)
  AND (%(before_ts)s::timestamptz IS NULL OR (created_at, id) < (%(before_ts)s, %(before_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: prune_cutoff
-- One cutoff from the database's clock for a whole prune: every batch and the dry run's count
-- judge the same rows.
SELECT now() - make_interval(secs => %(older_than)s) AS cutoff;

-- name: count_prunable
SELECT count(*) AS n FROM ai_server_tasks
WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < %(cutoff)s;

-- name: any_prunable
-- One index probe (ai_server_tasks_finished_idx): whether a bounded prune left any behind.
SELECT EXISTS (
    SELECT 1 FROM ai_server_tasks
    WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < %(cutoff)s
) AS any;

-- name: prune_batch
-- The oldest finished tasks, at most `limit`, through ai_server_tasks_finished_idx (its predicate
-- is repeated exactly, so the planner can use it). SKIP LOCKED: a batch never waits on a row
-- another transaction holds (a concurrent prune, an operator's retry).
DELETE FROM ai_server_tasks WHERE id IN (
    SELECT id FROM ai_server_tasks
    WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < %(cutoff)s
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);

-- name: cancel
-- Queued or running tasks only (FOR UPDATE: the status reported is the one the cancel replaced).
-- A running task keeps locked_by and its lease's end: the runner working it finds the task no
-- longer held at its next renewal and abandons it, its outcome writes above match no row, and
-- `retry` waits for that lease to end.
UPDATE ai_server_tasks AS t
SET status = 'cancelled', last_error = 'cancelled by an operator', finished_at = now(), updated_at = now()
FROM (SELECT id, status FROM ai_server_tasks WHERE id = %(id)s FOR UPDATE) AS before
WHERE t.id = before.id AND before.status IN ('queued', 'running')
RETURNING before.status AS was;

-- name: retry
-- Failed or cancelled tasks only, queued again and due now with `attempts` more attempts. The count
-- goes on (never reset): an attempt of before can never pass the attempts guard of the outcome
-- writes. A task cancelled while running waits until the lease of its last attempt has ended, by
-- when its runner has let go of it.
UPDATE ai_server_tasks
SET status = 'queued', max_attempts = attempts + %(attempts)s, run_after = now(), locked_by = NULL,
    lease_expires_at = NULL, result = NULL, started_at = NULL, finished_at = NULL, updated_at = now()
WHERE id = %(id)s AND status IN ('failed', 'cancelled')
  AND (lease_expires_at IS NULL OR lease_expires_at < now())
RETURNING id;
