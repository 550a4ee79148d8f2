-- Views counted by the origins (storage tiering): plays of an asset
-- version (rendition '') and fetches of each rendition's segments, summed
-- per bucket of `origin.view_bucket`; written in batches, never per request.
CREATE TABLE media_views (
    asset_id  UUID        NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    version   INTEGER     NOT NULL,
    rendition TEXT        NOT NULL,
    bucket    TIMESTAMPTZ NOT NULL,
    views     BIGINT      NOT NULL,
    PRIMARY KEY (asset_id, version, rendition, bucket)
);

ALTER TABLE assets ADD COLUMN last_viewed_at TIMESTAMPTZ;

-- When a rendition was published (rows are written then): a rendition
-- never viewed is idle since then.
ALTER TABLE renditions ADD COLUMN published_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- Placed by hand (`cascade assets tier`): the policy leaves it where it is
-- until it is handed back (`cascade assets tier ID policy`).
ALTER TABLE renditions ADD COLUMN tier_pinned BOOLEAN NOT NULL DEFAULT false;
