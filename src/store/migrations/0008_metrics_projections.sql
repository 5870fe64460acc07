-- Projections for the metrics API (24 hours at 100 million mutations in well under 100 ms).
--
-- The top models and top clients read sync_mutations_5m, whose rows are per bucket, model,
-- operation, outcome, reason AND client: at 100 million mutations a day that is tens of
-- millions of rows (27.6 million in the read_side bench), hardly fewer than the raw table.
-- These projections keep the same sums rolled up per (bucket, model), (bucket, client) and
-- (hour, client). ClickHouse maintains them part by part with the table itself, so there is
-- no second write path and no backfill that could race the pipeline, and a sum answered
-- from them equals the table's. The aggregate expressions are exactly the metrics API's, so
-- its queries match them.

-- A merge of an AggregatingMergeTree combines rows: rebuild the projections when it does.
ALTER TABLE sync_mutations_5m MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE sync_mutations_5m ADD PROJECTION IF NOT EXISTS top_models_5m (
    SELECT bucket, model, sum(mutations), sumIf(mutations, outcome = 'conflict'), sumIf(mutations, outcome = 'rejected')
    GROUP BY bucket, model
);

ALTER TABLE sync_mutations_5m ADD PROJECTION IF NOT EXISTS top_clients_5m (
    SELECT bucket, client_id, sum(mutations), sumIf(mutations, outcome = 'conflict'), sumIf(mutations, outcome = 'rejected')
    GROUP BY bucket, client_id
);

-- Whole hours of a window read this one: 12 times fewer rows than five-minute buckets.
ALTER TABLE sync_mutations_5m ADD PROJECTION IF NOT EXISTS top_clients_1h (
    SELECT toStartOfHour(bucket), client_id, sum(mutations), sumIf(mutations, outcome = 'conflict'), sumIf(mutations, outcome = 'rejected')
    GROUP BY toStartOfHour(bucket), client_id
);

-- The health strip and the per-kind totals merge one t-digest state per bucket, kind and
-- outcome: merging them per bucket (and per bucket and kind) ahead of time leaves the query
-- a seventh (a quarter) of the states to merge. The sums and the quantile merge are spelled
-- exactly as the metrics API spells them.
ALTER TABLE sync_requests_5m MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE sync_requests_5m ADD PROJECTION IF NOT EXISTS health_5m (
    SELECT bucket, sum(requests), sumIf(requests, outcome = 'error'), sum(mutations), sum(conflicts), sum(rejected),
           quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_quantiles)
    GROUP BY bucket
);

ALTER TABLE sync_requests_5m ADD PROJECTION IF NOT EXISTS kinds_5m (
    SELECT bucket, kind, sum(requests), sumIf(requests, outcome = 'error'), sum(mutations), sum(applied), sum(rejected),
           sum(conflicts), sum(duplicates), sum(snapshots), quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_quantiles)
    GROUP BY bucket, kind
);

-- Parts written before this migration get the projections in the background (a mutation);
-- until a part has them, queries read that part from the table itself (same sums, slower;
-- percentiles within the t-digest's approximation).
ALTER TABLE sync_mutations_5m MATERIALIZE PROJECTION top_models_5m;
ALTER TABLE sync_mutations_5m MATERIALIZE PROJECTION top_clients_5m;
ALTER TABLE sync_mutations_5m MATERIALIZE PROJECTION top_clients_1h;
ALTER TABLE sync_requests_5m MATERIALIZE PROJECTION health_5m;
ALTER TABLE sync_requests_5m MATERIALIZE PROJECTION kinds_5m;
