-- A record's history (issue 17) reads one record's mutations from a table sorted by arrival.
-- The entity_id bloom filter skips granules without the id, but a busy record's mutations are
-- spread over the whole day, and every granule the filter lets through is read whole. This
-- projection keeps only (entity_id, model) and each row's offset in its part (ClickHouse
-- 25.5+: a projection used as an index), so a lookup by entity id (and model) reads the
-- granules holding that record's rows and little else, for a few bytes per row.
ALTER TABLE sync_mutations ADD PROJECTION IF NOT EXISTS by_record (SELECT _part_offset ORDER BY entity_id, model);

-- Parts written before this migration get it in the background (a mutation); until then the
-- bloom filter serves them.
ALTER TABLE sync_mutations MATERIALIZE PROJECTION by_record;
