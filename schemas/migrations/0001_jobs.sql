-- The job queue. One row per unit of work; see platform/src/queue.rs.
CREATE TABLE jobs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             TEXT        NOT NULL,
    payload          JSONB       NOT NULL DEFAULT '{}'::jsonb,
    state            TEXT        NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    -- Higher runs first; ties go to the job that became runnable first.
    priority         SMALLINT    NOT NULL DEFAULT 0,
    run_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts         INTEGER     NOT NULL DEFAULT 0,
    max_attempts     INTEGER     NOT NULL DEFAULT 5 CHECK (max_attempts > 0),
    -- Refuses a second job for the same work while the key is set.
    idempotency_key  TEXT,
    -- The current lease: who holds the job, the fencing token of this claim
    -- (every claim draws a new one) and when the lease runs out.
    lease_owner      TEXT,
    lease_id         UUID,
    lease_expires_at TIMESTAMPTZ,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (kind, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The claim query walks this index: runnable jobs by priority, then age.
CREATE INDEX jobs_claimable ON jobs (priority DESC, run_at, id)
    WHERE state = 'queued';

-- The reaper looks for expired leases.
CREATE INDEX jobs_running_leases ON jobs (lease_expires_at)
    WHERE state = 'running';

CREATE INDEX jobs_by_state_kind ON jobs (state, kind, id);
