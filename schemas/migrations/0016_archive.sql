-- The archive tier: an asset idle long enough keeps only its source; its
-- renditions' objects are deleted and rebuilt from the source when it is
-- played again (`archived -> restoring -> ready`).
ALTER TABLE assets
    DROP CONSTRAINT assets_state_check,
    ADD CONSTRAINT assets_state_check
        CHECK (state IN ('waiting', 'processing', 'ready', 'errored', 'archived', 'restoring')),
    -- The storage tier holding the current source (`source_version`'s
    -- object): `hot` but for an archived asset's, which may be moved colder.
    ADD COLUMN source_tier TEXT        NOT NULL DEFAULT 'hot',
    ADD COLUMN archived_at TIMESTAMPTZ;

CREATE INDEX assets_archived ON assets (id) WHERE state IN ('archived', 'restoring');
