-- Ready answers to the common questions (plain views: they cost nothing until queried).
CREATE VIEW IF NOT EXISTS failures_by_reason_24h AS
SELECT reason, model, client_id, sum(mutations) AS failures, min(bucket) AS first_seen, max(bucket) AS last_seen
FROM sync_mutations_5m
WHERE outcome IN ('rejected', 'conflict') AND bucket >= now() - INTERVAL 1 DAY
GROUP BY reason, model, client_id
ORDER BY failures DESC;

CREATE VIEW IF NOT EXISTS health_5m_24h AS
SELECT
    bucket,
    sum(requests) AS requests,
    sum(server_errors) AS server_errors,
    sum(mutations) AS mutations,
    sum(conflicts) AS conflicts,
    sum(rejected) AS rejected,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_quantiles) AS duration_us_p50_p95_p99
FROM sync_requests_5m
WHERE bucket >= now() - INTERVAL 1 DAY
GROUP BY bucket
ORDER BY bucket;

CREATE VIEW IF NOT EXISTS replays AS
SELECT
    replay_id, original_request_id, original_mutation_id, clone_mutation_id, position, actor,
    idempotency_key, created_at,
    argMax(status, updated_at) AS status,
    argMax(host_http_status, updated_at) AS host_http_status,
    argMax(host_reason, updated_at) AS host_reason,
    max(updated_at) AS last_updated_at
FROM replay_links
GROUP BY replay_id, original_request_id, original_mutation_id, clone_mutation_id, position, actor, idempotency_key, created_at;
