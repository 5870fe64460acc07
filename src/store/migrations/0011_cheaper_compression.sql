-- Cheaper compression for the large text columns (issue 15): ZSTD(1) instead of ZSTD(3).
--
-- Every insert compresses these columns and every merge compresses them again. On the host
-- benchmark, with ClickHouse on the same machine, ClickHouse's own CPU per captured push was
-- about as large as the host's work (BENCHMARKS.md section 6). Level 1 is ZSTD's fastest
-- standard level; the stored size grows by a few percent (measured in BENCHMARKS.md).
-- Only the codec changes: existing parts keep ZSTD(3) until a merge rewrites them.
ALTER TABLE sync_requests MODIFY COLUMN request_body CODEC(ZSTD(1));
ALTER TABLE sync_requests MODIFY COLUMN response_body CODEC(ZSTD(1));
ALTER TABLE sync_mutations MODIFY COLUMN reason_data CODEC(ZSTD(1));
ALTER TABLE sync_mutations MODIFY COLUMN payload CODEC(ZSTD(1));
ALTER TABLE sync_mutations MODIFY COLUMN state_before CODEC(ZSTD(1));
ALTER TABLE sync_mutations MODIFY COLUMN state_after CODEC(ZSTD(1));
ALTER TABLE sync_mutations MODIFY COLUMN diff CODEC(ZSTD(1));
