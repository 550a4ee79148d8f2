-- Direct uploads: a one-time upload URL that an API key holder hands to a
-- creator's or viewer's browser (as Mux's direct uploads and Cloudflare
-- Stream's direct creator uploads). The URL carries a random secret; only
-- its SHA-256 is kept here. Creating one creates its asset, whose source
-- the direct upload claims (assets.source_claim = the direct upload's id),
-- so no other path writes that source. The tus upload made through the URL
-- has the direct upload's id, so the claim needs no hand-over.
CREATE TABLE direct_uploads (
    id              UUID PRIMARY KEY,
    environment_id  UUID        NOT NULL REFERENCES environments (id),
    asset_id        UUID        NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    -- SHA-256 of the URL's secret.
    secret_hash     BYTEA       NOT NULL CHECK (octet_length(secret_hash) = 32),
    -- The one browser origin that may use the URL (CORS): an exact
    -- origin, or '*' where the operator allows it.
    cors_origin     TEXT        NOT NULL CHECK (cors_origin <> ''),
    -- Largest upload the URL takes, in bytes.
    max_size        BIGINT      NOT NULL CHECK (max_size > 0),
    -- waiting -> uploading -> complete; waiting -> cancelled | expired;
    -- uploading -> waiting (a simple upload failed, or its replica died);
    -- uploading -> cancelled | expired (its tus upload was terminated
    -- through the URL, or expired unfinished).
    state           TEXT        NOT NULL DEFAULT 'waiting'
                    CHECK (state IN ('waiting', 'uploading', 'complete', 'cancelled', 'expired')),
    -- How the source is sent, from `uploading` on: 'tus' or 'simple'.
    protocol        TEXT        CHECK (protocol IN ('tus', 'simple')),
    -- A simple upload in progress holds the URL until `leased_until`
    -- (renewed while its body streams), so two PUTs never write at once.
    lease_id        UUID,
    leased_until    TIMESTAMPTZ,
    -- Until when the URL can start an upload.
    expires_at      TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT direct_uploads_protocol_once_started
        CHECK (state IN ('cancelled', 'expired') OR ((state = 'waiting') = (protocol IS NULL)))
);

-- The sweeper's walk over URLs that may expire.
CREATE INDEX direct_uploads_open ON direct_uploads (expires_at) WHERE state IN ('waiting', 'uploading');
-- Cancelled with their asset.
CREATE INDEX direct_uploads_by_asset ON direct_uploads (asset_id);
