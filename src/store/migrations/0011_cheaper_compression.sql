-- Cheaper compression for the large text columns (issue 15): ZSTD(1) instead of ZSTD(3).
--
-- Every insert compresses these columns and every merge compresses them again. On the host
-- benchmark's own rows (BENCHMARKS.md section 6), ZSTD(1) took 4.0 us of ClickHouse CPU per
-- row to insert and merge against 4.6 us for ZSTD(3), and stored 32 bytes per row against 31
-- (LZ4: 3.3 us, 53 bytes). The OpenTelemetry Collector's ClickHouse exporter uses ZSTD(1)
-- for its columns for the same reason.
-- Only the codec changes: existing parts keep ZSTD(3) until a merge rewrites them.
ALTER TABLE sync_requests MODIFY COLUMN request_body CODEC(ZSTD(1));
ALTER TABLE sync_requests MODIFY COLUMN response_body CODEC(ZSTD(1));
ALTER TABLE sync_mutations MODIFY COLUMN reason_data CODEC(ZSTD(1));
ALTER TABLE sync_mutations MODIFY COLUMN payload CODEC(ZSTD(1));
ALTER TABLE sync_mutations MODIFY COLUMN state_before CODEC(ZSTD(1));
ALTER TABLE sync_mutations MODIFY COLUMN state_after CODEC(ZSTD(1));
ALTER TABLE sync_mutations MODIFY COLUMN diff CODEC(ZSTD(1));
