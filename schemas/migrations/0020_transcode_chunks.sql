-- Chunked transcoding (workers/src/transcode/chunked.rs): the chunks a
-- version's source is split into, each a `transcode` job of its own. A
-- chunk is recorded done, with what it produced (its renditions' segments),
-- only under its job's current lease, so a superseded attempt's result is
-- never joined into the published presentation.
CREATE TABLE transcode_chunks (
    asset_id      UUID             NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    version       INTEGER          NOT NULL,
    chunk         INTEGER          NOT NULL CHECK (chunk >= 0),
    start_seconds DOUBLE PRECISION NOT NULL,
    -- NULL: to the end of the source.
    end_seconds   DOUBLE PRECISION,
    state         TEXT             NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
    -- Seconds of the chunk's media transcoded so far (for progress).
    done_seconds  DOUBLE PRECISION NOT NULL DEFAULT 0,
    result        JSONB,
    -- The worker (lease owner) whose result was recorded.
    done_by       TEXT,
    done_at       TIMESTAMPTZ,
    PRIMARY KEY (asset_id, version, chunk)
);
