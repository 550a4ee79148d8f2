-- Tiered storage: the tier each published rendition's media (init,
-- segments, media playlist) are stored in, and a move under way. A
-- version's manifests and sources stay in the hot tier.
ALTER TABLE renditions
    ADD COLUMN tier      TEXT NOT NULL DEFAULT 'hot',
    -- A move copying the rendition to this tier; the switch to it is one
    -- conditional update naming both.
    ADD COLUMN moving_to TEXT;

CREATE INDEX renditions_not_hot ON renditions (asset_id) WHERE tier <> 'hot';
