-- Named queries of the runner's metrics listener (wcu_ai.task_runner.metrics), run at scrape time.

-- name: queue_stats
-- Each count reads only its partial index of migration 0001 (status = 'queued' / 'running'), so
-- it costs what the backlog costs, never what the finished rows do, and stops at %(cap)s rows:
-- a scrape stays cheap however large the backlog grows. The oldest due task is the first entry of
-- the queued index (run_after, created_at).
SELECT
    (SELECT count(*) FROM (
        SELECT 1 FROM ai_server_tasks WHERE status = 'queued' LIMIT %(cap)s
    ) AS q)::bigint AS queued,
    (SELECT count(*) FROM (
        SELECT 1 FROM ai_server_tasks WHERE status = 'running' LIMIT %(cap)s
    ) AS r)::bigint AS running,
    (SELECT extract(epoch FROM now() - min(run_after))::float8
     FROM ai_server_tasks WHERE status = 'queued' AND run_after <= now()) AS oldest_due_age;
