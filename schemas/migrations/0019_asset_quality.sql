-- The publish gate's record of an asset's published version: checks
-- passed and failed, the failures, and per-rendition measures
-- (workers/src/transcode/gate.rs, QualityRecord). NULL: not checked.
ALTER TABLE assets ADD COLUMN quality JSONB;
