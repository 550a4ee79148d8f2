-- Assets and the renditions each published version has.
CREATE TABLE assets (
    id                UUID PRIMARY KEY,
    -- Public handle for playback URLs; distinct so it can be rotated or revoked.
    playback_id       TEXT        NOT NULL UNIQUE,
    playback_policy   TEXT        NOT NULL DEFAULT 'public' CHECK (playback_policy IN ('public', 'signed')),
    state             TEXT        NOT NULL DEFAULT 'waiting'
                      CHECK (state IN ('waiting', 'processing', 'ready', 'errored')),
    title             TEXT,
    metadata          JSONB       NOT NULL DEFAULT '{}'::jsonb,
    -- Percent of the source duration transcoded, 0..100.
    progress          REAL        NOT NULL DEFAULT 0,
    -- Stable code and creator-readable message when errored.
    error_code        TEXT,
    error_message     TEXT,
    duration_seconds  DOUBLE PRECISION,
    source_size       BIGINT,
    -- The version whose manifests are live (objects under v{n}/); NULL until ready.
    published_version INTEGER,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX assets_created ON assets (created_at DESC, id);

CREATE TABLE renditions (
    asset_id          UUID        NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    version           INTEGER     NOT NULL,
    name              TEXT        NOT NULL,
    kind              TEXT        NOT NULL CHECK (kind IN ('video', 'audio')),
    codecs            TEXT        NOT NULL,
    width             INTEGER,
    height            INTEGER,
    frame_rate        TEXT,
    channels          INTEGER,
    sample_rate       INTEGER,
    -- Measured from the real segments, bits per second.
    bandwidth         BIGINT      NOT NULL,
    average_bandwidth BIGINT      NOT NULL,
    segment_count     INTEGER     NOT NULL,
    -- Which encoder produced it (libx264, h264_nvenc, aac, ...).
    encoder           TEXT        NOT NULL,
    PRIMARY KEY (asset_id, version, name)
);
