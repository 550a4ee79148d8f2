-- Webhook deliveries: one row per (event, endpoint), updated on each attempt,
-- so operators can see what was sent, when, and what the receiver said.
CREATE TABLE webhook_deliveries (
    event_id      UUID        NOT NULL,
    endpoint      TEXT        NOT NULL,
    event_type    TEXT        NOT NULL,
    asset_id      UUID,
    attempts      INTEGER     NOT NULL DEFAULT 0,
    last_status   INTEGER,
    last_error    TEXT,
    delivered_at  TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, endpoint)
);
