-- Which values of each stored payload redaction changed (README "Redaction"), so that replay
-- restores exactly those paths instead of guessing from the marker text. Rows stored before
-- this migration keep redacted_paths_recorded = false: their paths are unknown.
ALTER TABLE sync_mutations
    ADD COLUMN IF NOT EXISTS redacted_paths Array(String) COMMENT 'JSON Pointers (RFC 6901) into payload of every value redaction replaced or cut',
    ADD COLUMN IF NOT EXISTS redacted_paths_recorded Bool DEFAULT false COMMENT 'false for rows stored before redacted paths were recorded';
