-- tus uploads write their PATCH bodies straight into an S3 multipart upload
-- of the asset's source (assets/{asset}/source); only bodies too small for a
-- part (S3 wants 5 MiB but for the last) or of unknown length are staged as
-- separate objects, and go into the next part.

-- The old per-PATCH part objects are what is now called staged pieces.
ALTER TABLE uploads RENAME COLUMN part_keys TO staged_keys;

ALTER TABLE uploads
    -- Id of the multipart upload of the source, created at the first PATCH
    -- that uploads a part; NULL until then (and once the upload is complete).
    ADD COLUMN multipart_id  TEXT,
    -- Next part number a PATCH may draw (under its lease). Numbers are never
    -- handed out twice, so a PATCH whose lease lapsed can never overwrite a
    -- part another request recorded; parts never recorded are left out of
    -- CompleteMultipartUpload. PATCHes use 1..=9000; 9001..=10000 are kept
    -- for the staged pieces left over at completion.
    ADD COLUMN next_part     INTEGER   NOT NULL DEFAULT 1 CHECK (next_part BETWEEN 1 AND 9001),
    -- The recorded parts, in byte order (so in ascending part number):
    -- number, ETag and size of each. "offset" = sum(part_sizes) + staged bytes.
    ADD COLUMN part_numbers  INTEGER[] NOT NULL DEFAULT '{}',
    ADD COLUMN part_etags    TEXT[]    NOT NULL DEFAULT '{}',
    ADD COLUMN part_sizes    BIGINT[]  NOT NULL DEFAULT '{}',
    -- Size of each piece in staged_keys (uploads/{id}/staged-NNNNNN-{lease}),
    -- in order; NULL for pieces stored before this migration.
    ADD COLUMN staged_sizes  BIGINT[]  NOT NULL DEFAULT '{}';

-- Uploads in progress across the upgrade: their parts become staged pieces.
UPDATE uploads
   SET staged_sizes = CASE WHEN cardinality(staged_keys) = 1 THEN ARRAY["offset"]
                           ELSE array_fill(NULL::bigint, ARRAY[cardinality(staged_keys)]) END
 WHERE cardinality(staged_keys) > 0;

ALTER TABLE uploads
    ADD CONSTRAINT uploads_parts_aligned CHECK (
        cardinality(part_numbers) = cardinality(part_etags)
        AND cardinality(part_numbers) = cardinality(part_sizes)),
    ADD CONSTRAINT uploads_staged_aligned CHECK (
        cardinality(staged_keys) = cardinality(staged_sizes));

-- `probing`: the bytes are complete and durable (the client has its 204);
-- the source is being fetched and probed in the background, under a lease,
-- before the upload is `complete`. The sweeper finishes one whose replica died.
ALTER TABLE uploads
    DROP CONSTRAINT uploads_state_check,
    ADD CONSTRAINT uploads_state_check
        CHECK (state IN ('receiving', 'assembling', 'probing', 'complete'));
