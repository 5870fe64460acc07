-- Clients whose clocks look wrong (issue 17). A mutation's delay is its push's arrival
-- (started_at) minus its timestamp (the client's clock). One mutation cannot tell time spent
-- offline from a clock that is behind, but a timestamp more than 60 s after its own arrival
-- can only be a clock ahead (no network or rounding takes that long the other way), and a
-- missing or invalid timestamp is a client bug. Only such mutations are aggregated, so the
-- table stays small and the metrics API's read of it cheap; the client page computes a
-- client's whole delay distribution from the raw rows.
CREATE TABLE IF NOT EXISTS sync_clock_anomalies_5m
(
    bucket            DateTime('UTC'),
    client_id         String,
    future            SimpleAggregateFunction(sum, UInt64) COMMENT 'mutations timestamped more than 60 s after their push arrived',
    invalid           SimpleAggregateFunction(sum, UInt64) COMMENT 'mutations whose timestamp was missing or not valid epoch milliseconds',
    furthest_ahead_ms SimpleAggregateFunction(max, Int64) COMMENT 'the most a future timestamp was ahead of arrival, milliseconds (0: none)'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, client_id)
TTL bucket + INTERVAL {aggregate_retention_days} DAY
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'Mutations with a timestamp in the future or an invalid one, per five minutes and client';

CREATE MATERIALIZED VIEW IF NOT EXISTS sync_clock_anomalies_5m_mv TO sync_clock_anomalies_5m AS
SELECT
    toStartOfFiveMinutes(toDateTime(started_at, 'UTC')) AS bucket,
    client_id,
    countIf(ahead > 60000) AS future,
    countIf(client_timestamp IS NULL) AS invalid,
    toInt64(ifNull(maxIf(ahead, ahead > 60000), 0)) AS furthest_ahead_ms
FROM (
    SELECT started_at, client_id, client_timestamp,
           toUnixTimestamp64Milli(client_timestamp) - toUnixTimestamp64Milli(started_at) AS ahead
    FROM sync_mutations
)
WHERE client_timestamp IS NULL OR ahead > 60000
GROUP BY bucket, client_id;

-- Rows captured before this migration.
INSERT INTO sync_clock_anomalies_5m
SELECT
    toStartOfFiveMinutes(toDateTime(started_at, 'UTC')) AS bucket,
    client_id,
    countIf(ahead > 60000) AS future,
    countIf(client_timestamp IS NULL) AS invalid,
    toInt64(ifNull(maxIf(ahead, ahead > 60000), 0)) AS furthest_ahead_ms
FROM (
    SELECT started_at, client_id, client_timestamp,
           toUnixTimestamp64Milli(client_timestamp) - toUnixTimestamp64Milli(started_at) AS ahead
    FROM sync_mutations
)
WHERE client_timestamp IS NULL OR ahead > 60000
GROUP BY bucket, client_id;
