-- Faithful capture: no invented dates, and the body encodings that were undone.

-- A timestamp that is not an integer of epoch milliseconds inside DateTime64's range
-- (1900..2299), or is missing, is NULL, never 1970-01-01 or 2299-12-31.
ALTER TABLE sync_mutations MODIFY COLUMN client_timestamp Nullable(DateTime64(3, 'UTC')) COMMENT 'the mutation''s timestamp (client clock); NULL when missing or not a valid integer of epoch milliseconds (client_timestamp_raw holds what was sent)';

ALTER TABLE sync_mutations ADD COLUMN IF NOT EXISTS client_timestamp_raw String DEFAULT '' COMMENT 'the timestamp as sent (JSON text) when it is not a valid epoch-milliseconds integer; empty when valid' AFTER client_timestamp;

-- Rows written before this migration stored the epoch (missing or invalid) and the clamp
-- value (past 2299) for timestamps that were not real: make them NULL too.
ALTER TABLE sync_mutations UPDATE client_timestamp = NULL WHERE client_timestamp = toDateTime64(0, 3, 'UTC') OR client_timestamp = toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC');

ALTER TABLE sync_requests ADD COLUMN IF NOT EXISTS request_content_encoding LowCardinality(String) DEFAULT '' COMMENT 'Content-Encoding of the request body as captured (gzip, deflate, br, zstd), undone before storing; empty: none' AFTER request_body_truncated;

ALTER TABLE sync_requests ADD COLUMN IF NOT EXISTS response_content_encoding LowCardinality(String) DEFAULT '' COMMENT 'Content-Encoding of the response body as captured, undone before storing; empty: none' AFTER response_body_truncated;
