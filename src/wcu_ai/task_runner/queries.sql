-- Named queries on ai_server_schedules (migration 0006), loaded once by wcu_ai.task_runner.schedule.
-- A schedule's runs fall on slots: origin + k * every, k an integer. date_bin(every, now(), origin)
-- is the slot at or before now; one `every` later is the next slot after now.

-- name: add_schedule
-- A new schedule is first due at the first slot past one whole interval from now: a new deployment prunes
-- and sweeps once it has run a while, not while it starts. A known one keeps its due time (that is
-- what carries a schedule across restarts and leaders) and takes this version's task type and
-- interval.
INSERT INTO ai_server_schedules (name, task_type, every_seconds, next_run_at)
VALUES (%(name)s, %(task_type)s, %(every)s,
        date_bin(make_interval(secs => %(every)s), now() + make_interval(secs => %(every)s), %(origin)s)
        + make_interval(secs => %(every)s))
ON CONFLICT (name) DO UPDATE
SET task_type = excluded.task_type, every_seconds = excluded.every_seconds, updated_at = now()
WHERE ai_server_schedules.task_type <> excluded.task_type
   OR ai_server_schedules.every_seconds <> excluded.every_seconds;

-- name: due_schedules
SELECT name FROM ai_server_schedules WHERE name = ANY(%(names)s) AND next_run_at <= now();

-- name: claim_schedule
-- Claims a due run and inserts its task in one statement: both happen or neither does.
-- The guard next_run_at <= now() makes the claim exactly once. A second runner claiming at the same
-- time (an old leader not yet stopped during a hand-over) waits for this row's lock, re-reads the row
-- once this commits (READ COMMITTED re-checks an UPDATE's WHERE on the newest version), finds the
-- next slot there, in the future, and updates nothing. Runs missed while no runner led become one
-- run: the next slot is counted from now, not from the missed due time.
WITH run AS (
    SELECT gen_random_uuid() AS task_id
), claimed AS (
    UPDATE ai_server_schedules
    SET next_run_at = date_bin(make_interval(secs => %(every)s), now(), %(origin)s)
                      + make_interval(secs => %(every)s),
        last_run_at = now(), last_task_id = (SELECT task_id FROM run), updated_at = now()
    WHERE name = %(name)s AND next_run_at <= now()
    RETURNING last_task_id
)
INSERT INTO ai_server_tasks (id, task_type, payload, max_attempts)
SELECT last_task_id, %(task_type)s, %(payload)s, %(max_attempts)s FROM claimed
RETURNING id;
