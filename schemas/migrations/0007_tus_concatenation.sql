-- The tus concatenation extension: a client uploads parts of a file in
-- parallel as `partial` uploads, then creates a `final` upload that names
-- them in order. Partials have no asset (the final creates it); their bytes
-- go to uploads/{id}/data. The final's assembly copies them into the
-- asset's source (UploadPartCopy where S3 allows) and deletes them.
ALTER TABLE uploads
    ALTER COLUMN asset_id DROP NOT NULL,
    ADD COLUMN concat      TEXT   NOT NULL DEFAULT 'none'
                           CHECK (concat IN ('none', 'partial', 'final')),
    -- A final upload's partials, in order.
    ADD COLUMN partial_ids UUID[] NOT NULL DEFAULT '{}',
    -- A partial taken by a final (once only). Deleting the final (its asset
    -- deleted) frees the partial, which then expires like any other.
    ADD COLUMN claimed_by  UUID REFERENCES uploads (id) ON DELETE SET NULL,
    ADD CONSTRAINT uploads_asset_unless_partial CHECK ((concat = 'partial') = (asset_id IS NULL));

-- Complete partials nobody claimed are removed when they expire.
CREATE INDEX uploads_unclaimed_partials ON uploads (expires_at)
    WHERE concat = 'partial' AND claimed_by IS NULL;
