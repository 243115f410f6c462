-- Cluster coordination (nodes, leases) and persistent subscriptions.

-- Every running node heartbeats its row; a node is alive while its heartbeat
-- is younger than the lease TTL.
CREATE TABLE nodes (
    id             text COLLATE "C" PRIMARY KEY,
    advertised_url text        NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_heartbeat timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One leader per resource ("subscription:<name>", "projection:<name>").
-- `epoch` grows on every change of owner: every write a leader makes is
-- conditional on its epoch, so a deposed leader cannot write (fencing).
-- A released lease has no owner. Times are the database's clock, never a node's.
CREATE TABLE leases (
    resource   text COLLATE "C" PRIMARY KEY,
    owner      text COLLATE "C",
    epoch      bigint      NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL
);

CREATE TABLE subscriptions (
    name           text COLLATE "C" PRIMARY KEY,
    -- {"all": true} | {"stream": "…"} | {"category": "…"} | {"type": "…"}
    source         jsonb       NOT NULL,
    start_from     jsonb       NOT NULL,
    partition_by   text        NOT NULL CHECK (partition_by IN ('stream', 'none', 'correlation_id')),
    max_in_flight  integer     NOT NULL CHECK (max_in_flight > 0),
    ack_timeout_ms integer     NOT NULL CHECK (ack_timeout_ms > 0),
    max_retries    integer     NOT NULL CHECK (max_retries >= 0),
    -- Every position <= checkpoint is settled (acked, skipped or parked).
    checkpoint     bigint      NOT NULL CHECK (checkpoint >= 0),
    -- Positions above the checkpoint already settled (acks out of order), so
    -- that a new leader does not deliver them again.
    settled_above  bigint[]    NOT NULL DEFAULT '{}',
    -- What the leader last reported.
    in_flight      integer     NOT NULL DEFAULT 0,
    consumers      integer     NOT NULL DEFAULT 0,
    -- Bumped by every definition change and reset: the leader restarts.
    generation     bigint      NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Dead-lettered events of a subscription.
CREATE TABLE subscription_parked (
    subscription text COLLATE "C" NOT NULL REFERENCES subscriptions (name) ON DELETE CASCADE,
    position     bigint      NOT NULL,
    attempts     integer     NOT NULL,
    reason       text        NOT NULL,
    -- Put back in line by a replay: the leader delivers it again.
    replaying    boolean     NOT NULL DEFAULT false,
    parked_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (subscription, position)
);
