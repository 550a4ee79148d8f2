-- Files taken in from the watch folder: claimed before ingesting, so a
-- restart never ingests the same file twice.
CREATE TABLE watch_files (
    name        TEXT        NOT NULL,
    size        BIGINT      NOT NULL,
    mtime_ns    BIGINT      NOT NULL,
    asset_id    UUID        NOT NULL,
    -- 'ingesting' until the source is stored and the asset handed on; then 'done' or 'failed'.
    state       TEXT        NOT NULL DEFAULT 'ingesting' CHECK (state IN ('ingesting', 'done', 'failed')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (name, size, mtime_ns)
);
