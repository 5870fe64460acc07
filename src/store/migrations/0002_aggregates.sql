-- Five-minute request aggregates, so the metrics API and Grafana never scan raw rows.
CREATE TABLE IF NOT EXISTS sync_requests_5m
(
    bucket             DateTime('UTC') COMMENT 'start of the five-minute bucket',
    kind               LowCardinality(String),
    outcome            LowCardinality(String),
    requests           SimpleAggregateFunction(sum, UInt64),
    server_errors      SimpleAggregateFunction(sum, UInt64) COMMENT 'HTTP status >= 500',
    mutations          SimpleAggregateFunction(sum, UInt64),
    applied            SimpleAggregateFunction(sum, UInt64),
    rejected           SimpleAggregateFunction(sum, UInt64),
    conflicts          SimpleAggregateFunction(sum, UInt64),
    duplicates         SimpleAggregateFunction(sum, UInt64),
    snapshots          SimpleAggregateFunction(sum, UInt64),
    duration_us_sum    SimpleAggregateFunction(sum, UInt64),
    duration_us_max    SimpleAggregateFunction(max, UInt64),
    duration_quantiles AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, kind, outcome)
TTL bucket + INTERVAL {aggregate_retention_days} DAY
COMMENT 'Requests per five minutes by kind and outcome; merge duration_quantiles with quantilesTDigestMerge(0.5, 0.95, 0.99)';

CREATE MATERIALIZED VIEW IF NOT EXISTS sync_requests_5m_mv TO sync_requests_5m AS
SELECT
    toStartOfFiveMinutes(toDateTime(started_at, 'UTC')) AS bucket,
    kind,
    outcome,
    count() AS requests,
    countIf(http_status >= 500) AS server_errors,
    sum(mutation_count) AS mutations,
    sum(applied_count) AS applied,
    sum(rejected_count) AS rejected,
    sum(conflict_count) AS conflicts,
    sum(duplicate_count) AS duplicates,
    sum(snapshot_count) AS snapshots,
    sum(duration_us) AS duration_us_sum,
    max(duration_us) AS duration_us_max,
    quantilesTDigestState(0.5, 0.95, 0.99)(duration_us) AS duration_quantiles
FROM sync_requests
GROUP BY bucket, kind, outcome;

-- Five-minute mutation aggregates by model, client, operation, outcome and reason.
CREATE TABLE IF NOT EXISTS sync_mutations_5m
(
    bucket    DateTime('UTC'),
    model     LowCardinality(String),
    operation LowCardinality(String),
    outcome   LowCardinality(String),
    reason    LowCardinality(String),
    client_id String,
    mutations SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, model, outcome, reason, operation, client_id)
TTL bucket + INTERVAL {aggregate_retention_days} DAY
COMMENT 'Mutations per five minutes by model, operation, outcome, reason and client';

CREATE MATERIALIZED VIEW IF NOT EXISTS sync_mutations_5m_mv TO sync_mutations_5m AS
SELECT
    toStartOfFiveMinutes(toDateTime(started_at, 'UTC')) AS bucket,
    model,
    operation,
    outcome,
    reason,
    client_id,
    count() AS mutations
FROM sync_mutations
GROUP BY bucket, model, operation, outcome, reason, client_id;
