-- A retried insert (same insert_deduplication_token) lands once in sync_requests and
-- sync_mutations (their non_replicated_deduplication_window, migration 1); without a window
-- of their own, the five-minute aggregate tables counted it twice. With it, the block each
-- materialized view derives from a deduplicated insert is deduplicated too (ClickHouse
-- 26.9: deduplicate_blocks_in_dependent_materialized_views, which the writer also sets).
ALTER TABLE sync_requests_5m MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE sync_mutations_5m MODIFY SETTING non_replicated_deduplication_window = 1000;
