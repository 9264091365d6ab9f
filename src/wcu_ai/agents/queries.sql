-- Named queries of the agents. Parameters are named.

-- name: lock_metrics_queueing
-- Held to the end of the transaction: the check below and the insert that follows it are one
-- step, so runs ending at once (over several API pods) queue one calculation, not one each.
SELECT pg_advisory_xact_lock(%(key)s);

-- name: metrics_task_queued
-- One queued calculation counts every run before it starts: runs need not each add one.
-- The partial index ai_server_tasks_queued_idx keeps this a scan of the queued tasks only.
SELECT EXISTS (
    SELECT 1 FROM ai_server_tasks WHERE status = 'queued' AND task_type = %(task_type)s
) AS queued;
