-- Why: finished tasks are deleted after WCU_TASK_RETENTION_DAYS, built-in periodic tasks run on
-- a schedule kept in the database, and an operator can cancel a task.
--
-- ai_server_schedules: one row per built-in schedule (the runner adds the rows it knows at start).
--   next_run_at is the only state a schedule has, and the runner claims a due run with one guarded
--   UPDATE (WHERE next_run_at <= now()) that also inserts the run's task: a second runner
--   overlapping during a hand-over waits on the row lock, finds next_run_at moved into the future
--   and claims nothing, so a due run is enqueued exactly once; a restart or a new leader finds
--   the due time where the last one left it, so no run is skipped either.
-- status 'cancelled': set only by an operator (`wcu-ai tasks cancel`). Every write that ends an
--   attempt is guarded by status = 'running' (tasks/queries.sql), so a cancelled task's outcome,
--   arriving later from the runner that was working it, never replaces the cancel.
-- ai_server_tasks_finished_idx: the retention deletes the oldest finished tasks in bounded
--   batches; this partial index holds finished rows only, in the order they are deleted, so a
--   batch reads the rows it deletes and no queued or running row.
-- parsed_documents_unfinished_idx: the sweep for documents stuck in queued/parsing reads only
--   those, not every parsed document.
-- Both indexes are built inside the migration's transaction, which blocks writes to the table
-- for as long as the build takes (seconds for millions of rows).
-- migrate:up
ALTER TABLE ai_server_tasks DROP CONSTRAINT ai_server_tasks_status_check;
ALTER TABLE ai_server_tasks ADD CONSTRAINT ai_server_tasks_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled'));

CREATE INDEX ai_server_tasks_finished_idx ON ai_server_tasks (finished_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');

CREATE INDEX parsed_documents_unfinished_idx ON parsed_documents (created_at)
    WHERE status IN ('queued', 'parsing');

CREATE TABLE ai_server_schedules (
    name          text        PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    task_type     text        NOT NULL CHECK (length(task_type) BETWEEN 1 AND 100),
    every_seconds integer     NOT NULL CHECK (every_seconds >= 1),
    next_run_at   timestamptz NOT NULL,
    last_run_at   timestamptz,
    last_task_id  uuid,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- migrate:down
DROP TABLE IF EXISTS ai_server_schedules;
DROP INDEX IF EXISTS parsed_documents_unfinished_idx;
DROP INDEX IF EXISTS ai_server_tasks_finished_idx;
-- The previous schema has no cancelled status: those tasks become failed, with the reason kept.
UPDATE ai_server_tasks
SET status = 'failed', last_error = coalesce(last_error, 'cancelled by an operator')
WHERE status = 'cancelled';
ALTER TABLE ai_server_tasks DROP CONSTRAINT ai_server_tasks_status_check;
ALTER TABLE ai_server_tasks ADD CONSTRAINT ai_server_tasks_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed'));
