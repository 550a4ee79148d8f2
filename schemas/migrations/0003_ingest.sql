-- API keys and resumable (tus 1.0.0) uploads.
CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    name        TEXT        NOT NULL,
    -- SHA-256 of the secret; the secret itself is shown once, at creation.
    key_hash    BYTEA       NOT NULL UNIQUE,
    -- First characters of the secret, so operators can tell keys apart.
    prefix      TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);

CREATE TABLE uploads (
    id            UUID PRIMARY KEY,
    asset_id      UUID        NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    -- Declared total length (Upload-Length).
    length        BIGINT      NOT NULL CHECK (length >= 0),
    -- Bytes durably received: the sum of the stored parts.
    "offset"      BIGINT      NOT NULL DEFAULT 0 CHECK ("offset" >= 0 AND "offset" <= length),
    -- Keys of the stored parts, in order (uploads/{id}/part-NNNNNN-{lock}).
    part_keys     TEXT[]      NOT NULL DEFAULT '{}',
    state         TEXT        NOT NULL DEFAULT 'receiving'
                  CHECK (state IN ('receiving', 'assembling', 'complete')),
    metadata      JSONB       NOT NULL DEFAULT '{}'::jsonb,
    -- A PATCH in progress holds the upload until this time (any replica may
    -- serve any request, so the lock lives here, not in process memory).
    locked_until  TIMESTAMPTZ,
    lock_id       UUID,
    expires_at    TIMESTAMPTZ NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX uploads_expiry ON uploads (expires_at) WHERE state <> 'complete';
