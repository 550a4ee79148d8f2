-- Tenancy and enforced states.
--
-- Every API key, asset, upload and webhook endpoint belongs to one
-- environment (a tenant); the API answers 404 for another environment's ids.
-- Rows from before this migration go into the environment named `default`.
CREATE TABLE environments (
    id          UUID PRIMARY KEY,
    name        TEXT        NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

INSERT INTO environments (id, name) VALUES (gen_random_uuid(), 'default');

ALTER TABLE api_keys ADD COLUMN environment_id UUID REFERENCES environments (id);
ALTER TABLE assets   ADD COLUMN environment_id UUID REFERENCES environments (id);
ALTER TABLE uploads  ADD COLUMN environment_id UUID REFERENCES environments (id);
UPDATE api_keys SET environment_id = (SELECT id FROM environments WHERE name = 'default');
UPDATE assets   SET environment_id = (SELECT id FROM environments WHERE name = 'default');
UPDATE uploads  SET environment_id = (SELECT id FROM environments WHERE name = 'default');
ALTER TABLE api_keys ALTER COLUMN environment_id SET NOT NULL;
ALTER TABLE assets   ALTER COLUMN environment_id SET NOT NULL;
ALTER TABLE uploads  ALTER COLUMN environment_id SET NOT NULL;

-- Listing walks one environment's assets, newest first.
DROP INDEX assets_created;
CREATE INDEX assets_by_environment ON assets (environment_id, created_at DESC, id);

-- One source per asset. Whoever writes it (a tus upload, a simple upload,
-- the watch folder, an import) first claims it with a conditional update on
-- a waiting asset (or, for an explicit replacement, a ready or errored
-- one); a claim ends when the source is complete (the asset moves to
-- `processing`) or is released (terminated upload, failed request) or runs
-- out (`source_claimed_until`: a writer that died). Every other writer is
-- refused, so two paths never write one asset's source.
ALTER TABLE assets
    ADD COLUMN source_claim         UUID,
    ADD COLUMN source_claimed_until TIMESTAMPTZ,
    -- The output version the current source makes (1 for the first source;
    -- a replacement asked for through the API makes the next one, written
    -- beside it, so segments a CDN holds as immutable are never rewritten).
    ADD COLUMN source_version       INTEGER     NOT NULL DEFAULT 1 CHECK (source_version >= 1),
    -- Deleted: invisible to the API and the origin; its jobs are cancelled
    -- and a purge job removes its objects and then the row, once no job of
    -- the asset can still write.
    ADD COLUMN deleted_at           TIMESTAMPTZ;

CREATE INDEX assets_deleted ON assets (deleted_at) WHERE deleted_at IS NOT NULL;

-- Jobs of one asset (cancelled when it is deleted; waited for by the purge).
CREATE INDEX jobs_by_asset ON jobs ((payload->>'asset_id')) WHERE payload ? 'asset_id';

-- Webhook endpoints an environment registers through the API (static ones
-- from config still receive every environment's events).
CREATE TABLE webhook_endpoints (
    id              UUID PRIMARY KEY,
    environment_id  UUID        NOT NULL REFERENCES environments (id),
    url             TEXT        NOT NULL,
    -- HMAC-SHA256 key of the `Cascade-Signature` header, shown once.
    secret          TEXT        NOT NULL,
    -- Event types sent there; empty means all.
    events          TEXT[]      NOT NULL DEFAULT '{}',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX webhook_endpoints_by_environment ON webhook_endpoints (environment_id, created_at);
