-- One row per captured push or pull.
CREATE TABLE IF NOT EXISTS sync_requests
(
    request_id              String COMMENT 'ULID minted by tether-pro when the request arrived',
    kind                    LowCardinality(String) COMMENT 'push | pull',
    client_id               String COMMENT 'client_id from the request body',
    client_version          LowCardinality(String) COMMENT 'X-Tether-Client-Version header',
    started_at              DateTime64(6, 'UTC') COMMENT 'when the request arrived',
    duration_us             UInt64 COMMENT 'time to the end of the response body, microseconds',
    http_status             UInt16,
    outcome                 LowCardinality(String) COMMENT 'ok | partial | rejected | conflict | error',
    mutation_count          UInt32 COMMENT 'mutations in the push',
    applied_count           UInt32,
    rejected_count          UInt32 COMMENT 'rejected, duplicates excluded',
    conflict_count          UInt32,
    duplicate_count         UInt32,
    rejected_by_reason      Map(LowCardinality(String), UInt32),
    snapshot_count          UInt32 COMMENT 'snapshots returned by a pull',
    has_more                Bool COMMENT 'pull answered has_more',
    request_body            String CODEC(ZSTD(3)) COMMENT 'redacted JSON text, capped',
    request_body_bytes      UInt64 COMMENT 'true size before the cap',
    request_body_truncated  Bool,
    response_body           String CODEC(ZSTD(3)) COMMENT 'redacted JSON text, capped',
    response_body_bytes     UInt64,
    response_body_truncated Bool,
    error                   String COMMENT 'why the request failed, if it did (redacted)',
    trace_id                String COMMENT 'W3C trace id (32 hex), empty when not traced',
    span_id                 String COMMENT 'W3C span id (16 hex)',
    replay_of               String COMMENT 'request_id of the original when this was a replay',
    INDEX idx_request_id request_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_client_id client_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(started_at)
ORDER BY (started_at, request_id)
TTL toDateTime(started_at) + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000
COMMENT 'One row per captured Tether push or pull';

-- One row per pushed mutation.
CREATE TABLE IF NOT EXISTS sync_mutations
(
    request_id       String,
    started_at       DateTime64(6, 'UTC') COMMENT 'the request''s start time (time filters and partitions)',
    position         UInt32 COMMENT 'index in the push batch, from 0',
    mutation_id      String,
    entity_id        String,
    model            LowCardinality(String),
    operation        LowCardinality(String) COMMENT 'create | update | delete',
    client_id        String,
    client_timestamp DateTime64(3, 'UTC') COMMENT 'the mutation''s timestamp (client clock)',
    version          UInt64,
    outcome          LowCardinality(String) COMMENT 'applied | rejected | conflict | duplicate',
    reason           LowCardinality(String) COMMENT 'rejection reason; empty when applied',
    reason_data      String CODEC(ZSTD(3)) COMMENT 'redacted JSON: validation messages, conflict server state',
    payload          String CODEC(ZSTD(3)) COMMENT 'redacted JSON payload as pushed',
    state_before     String CODEC(ZSTD(3)) COMMENT 'redacted JSON record state before; empty when unknown',
    state_after      String CODEC(ZSTD(3)) COMMENT 'redacted JSON record state after; empty when unknown',
    has_state        Bool COMMENT 'the host reported before/after state for this mutation',
    diff             String CODEC(ZSTD(3)) COMMENT 'JSON array of {path, change, old, new}',
    trace_id         String,
    span_id          String,
    INDEX idx_mutation_id mutation_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_entity_id entity_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_request_id request_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_client_id client_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_model model TYPE set(256) GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(started_at)
ORDER BY (started_at, request_id, position)
TTL toDateTime(started_at) + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000
COMMENT 'One row per pushed mutation, with outcome, redacted payload, state before/after and diff';

-- Replay audit: one row per cloned mutation. Written (status pending) and acknowledged before
-- the clone is sent, then written again with the host's answer; the newest row wins.
CREATE TABLE IF NOT EXISTS replay_links
(
    replay_id             String COMMENT 'ULID of this replay (the replayed push''s request id)',
    original_request_id   String,
    original_mutation_id  String,
    clone_mutation_id     String,
    position              UInt32,
    actor                 String COMMENT 'who asked for the replay',
    idempotency_key       String,
    created_at            DateTime64(3, 'UTC'),
    status                LowCardinality(String) COMMENT 'pending | applied | rejected | conflict | duplicate | failed',
    host_http_status      UInt16,
    host_reason           String,
    updated_at            DateTime64(3, 'UTC') COMMENT 'row version: the newest row per clone wins'
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (original_request_id, replay_id, clone_mutation_id)
COMMENT 'Original-to-clone links of live replays (never expires)';
