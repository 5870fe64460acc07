-- Each payload stored once, and the capture policy for applied mutations (issue 15).

-- The request row keeps the push body's envelope: the payloads that its mutation rows hold
-- are taken out of request_body, and their positions listed here (the dashboard puts them
-- back). Empty: request_body is the whole body, as before this migration.
ALTER TABLE sync_requests ADD COLUMN IF NOT EXISTS request_body_moved Array(UInt32) DEFAULT [] COMMENT 'positions of the mutations whose payload is stored in their sync_mutations row instead of request_body' AFTER request_body_truncated;

-- capture.applied = sampled or counts keeps an applied mutation's row (every count needs
-- it) without its payload, states and diff.
ALTER TABLE sync_mutations ADD COLUMN IF NOT EXISTS detail_kept Bool DEFAULT true COMMENT 'false: the capture policy (capture.applied) kept this applied mutation''s row without its payload, states and diff' AFTER has_state;
