-- Several dashboard replicas may write rows for the same link (derived replay and clone ids,
-- src/replay/ids.rs). `writer` (one id per Replayer) joins the sorting key, so a background
-- merge collapses only one writer's own rows (its `pending` row into its answer) and never one
-- replica's `applied` into another's later `duplicate`.
-- (No DEFAULT: ClickHouse refuses a new sorting-key column with a default expression; a
-- String column is empty for the rows written before.)
ALTER TABLE replay_links
    ADD COLUMN IF NOT EXISTS writer String COMMENT 'id of the dashboard process (Replayer) that wrote the row; empty before migration 0010',
    MODIFY ORDER BY (original_request_id, replay_id, clone_mutation_id, writer);

-- The view shows, per link, the row with the highest (status rank, updated_at, writer), as
-- src/store/links.rs reads them: `applied` (what changed the host) outranks the other answers
-- (`rejected`, `conflict`), which outrank `duplicate`, then `failed`, then `pending`.
CREATE OR REPLACE VIEW replays AS
SELECT
    replay_id, original_request_id, w.1 AS original_mutation_id, clone_mutation_id, w.2 AS position,
    w.3 AS actor, w.4 AS idempotency_key, first_created AS created_at, w.5 AS status,
    w.6 AS host_http_status, w.7 AS host_reason, w.8 AS last_updated_at
FROM (
    SELECT replay_id, original_request_id, clone_mutation_id, min(created_at) AS first_created,
           argMax((original_mutation_id, position, actor, idempotency_key, status, host_http_status, host_reason, updated_at),
                  (multiIf(status = 'applied', 4, status IN ('rejected', 'conflict'), 3, status = 'duplicate', 2, status = 'failed', 1, 0),
                   updated_at, writer)) AS w
    FROM replay_links
    GROUP BY original_request_id, replay_id, clone_mutation_id
);
