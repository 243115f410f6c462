-- The event store: streams, the global `$all` log and snapshots.
--
-- Names are stored with the "C" collation: the API orders stream listings by
-- byte order, and byte comparison is the cheapest.

-- One row per stream that was ever appended to (or hard-deleted).
CREATE TABLE streams (
    name          text COLLATE "C" PRIMARY KEY,
    -- The number of events ever appended to the stream.
    version       bigint      NOT NULL CHECK (version >= 0),
    -- Events below this version were soft-deleted: reads start here. The stream
    -- "exists" (can be read) while version >= first_version.
    first_version bigint      NOT NULL DEFAULT 1 CHECK (first_version >= 1),
    -- Hard-deleted: the events are erased and every read or append answers 410.
    tombstoned    boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The head of `$all`: the last position handed out. Every append transaction
-- updates this single row, so its row lock serialises position assignment with
-- commit order (see docs/adr/0001-gap-free-all-log.md).
CREATE TABLE all_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position  bigint  NOT NULL CHECK (position >= 0)
);
INSERT INTO all_head (singleton, position) VALUES (true, 0);

CREATE TABLE events (
    position       bigint           PRIMARY KEY,
    stream         text COLLATE "C" NOT NULL,
    version        bigint           NOT NULL CHECK (version >= 1),
    id             uuid             NOT NULL,
    type           text COLLATE "C" NOT NULL,
    category       text COLLATE "C" NOT NULL GENERATED ALWAYS AS (split_part(stream, '-', 1)) STORED,
    data           jsonb            NOT NULL,
    metadata       jsonb            NOT NULL CHECK (jsonb_typeof(metadata) = 'object'),
    correlation_id uuid,
    causation_id   uuid,
    created_at     timestamptz      NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_id_key UNIQUE (id),
    CONSTRAINT events_stream_version_key UNIQUE (stream, version)
);

-- `GET /all?category=` and `?type=` and `?correlation_id=`: each filter walks
-- its own index in position order.
CREATE INDEX events_category_position_idx ON events (category, position);
CREATE INDEX events_type_position_idx ON events (type, position);
CREATE INDEX events_correlation_position_idx ON events (correlation_id, position)
    WHERE correlation_id IS NOT NULL;

-- One snapshot per stream.
CREATE TABLE snapshots (
    stream     text COLLATE "C" PRIMARY KEY REFERENCES streams (name) ON DELETE CASCADE,
    version    bigint           NOT NULL CHECK (version >= 1),
    type       text COLLATE "C" NOT NULL,
    data       jsonb            NOT NULL,
    created_at timestamptz      NOT NULL DEFAULT clock_timestamp()
);
