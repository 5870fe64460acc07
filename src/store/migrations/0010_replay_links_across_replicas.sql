-- Several dashboard replicas may write rows for the same link (derived replay and clone ids,
-- src/replay/ids.rs): the view shows, per link, the row with the highest (status rank,
-- updated_at), as src/store/links.rs reads them. A send's outcome outranks `duplicate`, which
-- outranks `failed` and `pending`.
CREATE OR REPLACE VIEW replays AS
SELECT
    replay_id, original_request_id, w.1 AS original_mutation_id, clone_mutation_id, w.2 AS position,
    w.3 AS actor, w.4 AS idempotency_key, first_created AS created_at, w.5 AS status,
    w.6 AS host_http_status, w.7 AS host_reason, w.8 AS last_updated_at
FROM (
    SELECT replay_id, original_request_id, clone_mutation_id, min(created_at) AS first_created,
           argMax((original_mutation_id, position, actor, idempotency_key, status, host_http_status, host_reason, updated_at),
                  (multiIf(status = 'pending', 0, status = 'failed', 1, status = 'duplicate', 2, 3), updated_at)) AS w
    FROM replay_links
    GROUP BY original_request_id, replay_id, clone_mutation_id
);
