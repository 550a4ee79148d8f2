-- A segment a rendition sat out: its rung was dropped while the live
-- ladder could not keep up. The row keeps the numbering and timing every
-- rendition shares; there is no object, and playlists list it with
-- EXT-X-GAP.
ALTER TABLE live_segments ADD COLUMN gap BOOLEAN NOT NULL DEFAULT false;

-- Where a session's ladder changed: from `sequence` on, the renditions in
-- `absent` publish gaps instead of segments (and back when a later row
-- lists fewer). A dynamic MPD starts a Period at each change (in which the
-- dropped rung's Representation stands in with another rung's files).
CREATE TABLE live_ladder_changes (
    live_stream_id UUID NOT NULL REFERENCES live_streams (id) ON DELETE CASCADE,
    broadcast_id UUID NOT NULL,
    session INT NOT NULL,
    sequence BIGINT NOT NULL,
    media_time DOUBLE PRECISION NOT NULL,
    absent TEXT[] NOT NULL,
    PRIMARY KEY (broadcast_id, session, sequence)
);
