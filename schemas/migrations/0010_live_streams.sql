-- Live streams: a publisher sends RTMP with the stream key; the ingest
-- replica holding the connection transcodes the ladder and publishes live
-- HLS and DASH under live/{id}/; players watch by playback id. Only the
-- SHA-256 of the stream key is kept (it is shown at creation and reset).
CREATE TABLE live_streams (
    id                  UUID PRIMARY KEY,
    environment_id      UUID        NOT NULL REFERENCES environments (id),
    stream_key_hash     BYTEA       NOT NULL UNIQUE CHECK (octet_length(stream_key_hash) = 32),
    playback_id         TEXT        NOT NULL UNIQUE,
    playback_policy     TEXT        NOT NULL DEFAULT 'public' CHECK (playback_policy IN ('public', 'signed')),
    latency_mode        TEXT        NOT NULL DEFAULT 'standard' CHECK (latency_mode IN ('standard', 'low')),
    recording           BOOLEAN     NOT NULL DEFAULT true,
    -- A publisher that comes back within this many seconds continues the
    -- same broadcast (a discontinuity, not a new presentation).
    reconnect_window    INTEGER     NOT NULL DEFAULT 60 CHECK (reconnect_window BETWEEN 0 AND 1800),
    -- idle -> active (a broadcast: a publisher holds it, or one left less
    -- than the reconnect window ago) -> idle; disabled refuses publishers.
    state               TEXT        NOT NULL DEFAULT 'idle' CHECK (state IN ('idle', 'active', 'disabled')),
    -- The connection publishing now, and until when its replica vouches
    -- for it (renewed while it streams). An expired lease means the
    -- replica died: another publish may take the stream.
    publisher_id        UUID,
    publisher_node      TEXT,
    publisher_until     TIMESTAMPTZ,
    -- The broadcast under way (sessions joined by reconnects), and when its
    -- last publisher left (the reconnect window runs from there).
    broadcast_id        UUID,
    broadcast_started_at TIMESTAMPTZ,
    disconnected_at     TIMESTAMPTZ,
    -- Publish sessions and segment numbers are never reused on a stream,
    -- so every object key and every playlist's sequence stays unique.
    next_session        INTEGER     NOT NULL DEFAULT 1,
    next_sequence       BIGINT      NOT NULL DEFAULT 1,
    -- What the publisher sends (codecs, size, rate, measured bitrate, start,
    -- whether the ladder is degraded), and the last refused publish.
    ingest              JSONB,
    last_refusal        JSONB,
    metadata            JSONB       NOT NULL DEFAULT '{}'::jsonb,
    deleted_at          TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Only an active stream has a publisher (an active one may have none
    -- for its reconnect window); only a broadcast has one.
    CONSTRAINT live_streams_publisher_only_when_active
        CHECK (publisher_id IS NULL OR (state = 'active' AND broadcast_id IS NOT NULL))
);

CREATE INDEX live_streams_by_environment ON live_streams (environment_id, created_at DESC, id)
    WHERE deleted_at IS NULL;

-- Every segment of a broadcast, per rendition: the sliding windows are
-- rendered from the newest rows, a recording from all of them, and a replica
-- that takes over a broadcast continues from them.
CREATE TABLE live_segments (
    live_stream_id  UUID        NOT NULL REFERENCES live_streams (id) ON DELETE CASCADE,
    broadcast_id    UUID        NOT NULL,
    rendition       TEXT        NOT NULL,
    sequence        BIGINT      NOT NULL,
    session         INTEGER     NOT NULL,
    -- Media time of the segment in the rendition's timescale.
    start_ticks     BIGINT      NOT NULL,
    duration_ticks  BIGINT      NOT NULL CHECK (duration_ticks > 0),
    timescale       INTEGER     NOT NULL CHECK (timescale > 0),
    size            BIGINT      NOT NULL,
    -- Wall clock at ingest of the segment's first frame (EXT-X-PROGRAM-DATE-TIME).
    program_time    TIMESTAMPTZ NOT NULL,
    -- First segment of a publish session after a reconnect.
    discontinuity   BOOLEAN     NOT NULL DEFAULT false,
    PRIMARY KEY (live_stream_id, rendition, sequence)
);

CREATE INDEX live_segments_by_broadcast ON live_segments (broadcast_id, rendition, sequence);

-- The renditions of each publish session (what the master playlist and the
-- MPD's Periods describe).
CREATE TABLE live_sessions (
    live_stream_id  UUID        NOT NULL REFERENCES live_streams (id) ON DELETE CASCADE,
    session         INTEGER     NOT NULL,
    broadcast_id    UUID        NOT NULL,
    renditions      JSONB       NOT NULL,
    -- Wall clock of the session's first frame, and its media time (the
    -- timeline of a broadcast runs on across sessions): a DASH Period's
    -- start and presentationTimeOffset.
    started_at      TIMESTAMPTZ NOT NULL,
    media_offset    DOUBLE PRECISION NOT NULL DEFAULT 0,
    ended_at        TIMESTAMPTZ,
    PRIMARY KEY (live_stream_id, session)
);

-- A recorded broadcast is an asset; it names the stream it came from and
-- which sessions of which broadcast it holds ("{broadcast}:{first session}";
-- a broadcast whose encoding changed at a reconnect records as several).
ALTER TABLE assets ADD COLUMN live_stream_id UUID REFERENCES live_streams (id) ON DELETE SET NULL;
ALTER TABLE assets ADD COLUMN recorded_from TEXT UNIQUE;
CREATE INDEX assets_by_live_stream ON assets (live_stream_id) WHERE live_stream_id IS NOT NULL;
