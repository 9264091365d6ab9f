-- Why: the runner's durable task queue. One row per task; the runner claims rows with
-- FOR UPDATE SKIP LOCKED, holds them under a lease it renews while working, and a row whose
-- lease expired (its runner died) is claimed again. Inserts notify the runner (LISTEN) so it
-- wakes at once; polling is the fallback.
-- migrate:up
CREATE TABLE ai_server_tasks (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_type        text        NOT NULL CHECK (length(task_type) BETWEEN 1 AND 100),
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status           text        NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer     NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_after        timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    locked_by        text,
    last_error       text,
    result           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);

-- The claim query scans only runnable rows: queued ones by due time, running ones by lease.
CREATE INDEX ai_server_tasks_queued_idx ON ai_server_tasks (run_after, created_at) WHERE status = 'queued';
CREATE INDEX ai_server_tasks_lease_idx ON ai_server_tasks (lease_expires_at) WHERE status = 'running';
-- The API lists tasks newest first, optionally by status and type.
CREATE INDEX ai_server_tasks_created_idx ON ai_server_tasks (created_at DESC, id DESC);
CREATE INDEX ai_server_tasks_type_idx ON ai_server_tasks (task_type, created_at DESC);

-- The channel carries the schema so two deployments sharing one database do not wake each other.
CREATE FUNCTION ai_server_tasks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.ai_server_tasks', NEW.task_type);
    RETURN NULL;
END;
$$;

CREATE TRIGGER ai_server_tasks_notify_insert
    AFTER INSERT ON ai_server_tasks
    FOR EACH ROW EXECUTE FUNCTION ai_server_tasks_notify();

-- migrate:down
DROP TRIGGER IF EXISTS ai_server_tasks_notify_insert ON ai_server_tasks;
DROP FUNCTION IF EXISTS ai_server_tasks_notify();
DROP TABLE IF EXISTS ai_server_tasks;
