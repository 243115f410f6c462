-- Projections: read models built by projection workers (strata-projections).
-- The active worker of a projection (one, by lease "projection:<name>") owns
-- `checkpoint`, `state`, `last_error` and `failures`, writing them through its
-- fence; the server's API asks for changes through `desired` and
-- `rebuild_requested`.
CREATE TABLE projections (
    name              text COLLATE "C" PRIMARY KEY,
    -- Every position up to this is applied to the read model.
    checkpoint        bigint      NOT NULL DEFAULT 0 CHECK (checkpoint >= 0),
    state             text        NOT NULL DEFAULT 'running'
                          CHECK (state IN ('running', 'paused', 'rebuilding', 'failed')),
    last_error        text,
    failures          integer     NOT NULL DEFAULT 0,
    desired           text        NOT NULL DEFAULT 'running' CHECK (desired IN ('running', 'paused')),
    rebuild_requested boolean     NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
