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

-- Appends one group of requests (server/src/store/append.rs) in one statement:
-- locks the group's streams in name order, judges each request in arrival
-- order against the streams as the requests before it left them, and stores
-- the events of every accepted request. Each request keeps its own outcome.
--
-- Updating the single all_head row takes its row lock, held until commit: the
-- transaction that takes positions first also commits first, so no reader of
-- `$all` can see position P before every position below P is visible
-- (docs/adr/0001-gap-free-all-log.md).
--
-- stream_names  the group's streams, distinct and sorted (the lock order)
-- r_stream      per request: its stream, as a 1-based index into stream_names
-- r_expected    per request: -1 any, -2 no_stream, -3 exists, N >= 0 exactly N
-- r_events      per request: how many events it has (at least one)
-- check_ids     look the event ids up first, so that a request whose ids are
--               stored already gets outcome 1 instead of failing the group; the
--               server asks for it only after the unique index on ids refused
--               a group (idempotent retries are rare: the fast path skips the
--               lookup and lets the index catch them)
-- e_*           per event, requests one after the other; e_request: its
--               request (1-based), e_index: its place in the request (0-based)
--
-- One row per request, in order:
--   outcome 0  appended: events get versions version, version+1, ... and
--              positions position, position+1, ...
--   outcome 1  some of its ids are stored already (found with check_ids, or
--              when its expected version does not fit): nothing written, the
--              server decides between an idempotent retry and a duplicate
--   outcome 2  wrong expected version: version is the stream's (NULL: none)
--   outcome 3  the stream is tombstoned
-- A stream created concurrently, not yet committed when this looked, makes
-- the event insert hit events_stream_version_key; the server runs it again.
--
-- Plans: the writes keep one generic plan per session (planning them on every
-- call cost more than running them); the two lookups are planned on every
-- call with their actual arguments (EXECUTE), because a generic plan made
-- while a table was small would keep scanning it whole after it has grown.
CREATE FUNCTION strata_append(
    check_ids        boolean,
    stream_names     text[],
    r_stream         int[],
    r_expected       bigint[],
    r_events         int[],
    e_request        int[],
    e_index          int[],
    e_id             uuid[],
    e_type           text[],
    e_data           jsonb[],
    e_metadata       jsonb[],
    e_correlation_id uuid[],
    e_causation_id   uuid[]
) RETURNS TABLE (outcome smallint, version bigint, "position" bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    streams_n  int := cardinality(stream_names);
    requests_n int := cardinality(r_stream);
    s_version  bigint[] := array_fill(0::bigint, ARRAY[streams_n]);
    s_first    bigint[] := array_fill(1::bigint, ARRAY[streams_n]);
    s_tomb     boolean[] := array_fill(false, ARRAY[streams_n]);
    s_touched  boolean[] := array_fill(false, ARRAY[streams_n]);
    o_outcome  smallint[] := array_fill(0::smallint, ARRAY[requests_n]);
    o_version  bigint[] := array_fill(NULL::bigint, ARRAY[requests_n]);
    o_offset   bigint[] := array_fill(NULL::bigint, ARRAY[requests_n]);
    stored_ids uuid[];
    row        record;
    k          int;
    i          int;
    first_e    int := 1;
    accepted   bigint := 0;
    expected   bigint;
    current    bigint;
    fits       boolean;
    base       bigint;
BEGIN
    FOR row IN EXECUTE
        'SELECT array_position($1, s.name) AS k, s.version, s.first_version, s.tombstoned
         FROM streams s WHERE s.name = ANY ($1) ORDER BY s.name FOR UPDATE'
        USING stream_names
    LOOP
        s_version[row.k] := row.version;
        s_first[row.k] := row.first_version;
        s_tomb[row.k] := row.tombstoned;
    END LOOP;

    IF check_ids THEN
        EXECUTE 'SELECT array_agg(ev.id) FROM events ev WHERE ev.id = ANY ($1)'
        INTO stored_ids
        USING e_id;
    END IF;

    FOR i IN 1 .. requests_n LOOP
        k := r_stream[i];
        expected := r_expected[i];
        current := s_version[k];
        IF s_tomb[k] THEN
            o_outcome[i] := 3;
        ELSIF stored_ids IS NOT NULL AND e_id[first_e : first_e + r_events[i] - 1] && stored_ids THEN
            o_outcome[i] := 1;
        ELSE
            fits := CASE expected
                        WHEN -1 THEN true
                        WHEN -2 THEN current < s_first[k]
                        WHEN -3 THEN current >= s_first[k]
                        ELSE current = expected
                    END;
            IF fits THEN
                o_version[i] := current + 1;
                o_offset[i] := accepted;
                accepted := accepted + r_events[i];
                s_version[k] := current + r_events[i];
                s_touched[k] := true;
            ELSE
                o_outcome[i] := 2;
                o_version[i] := nullif(current, 0);
                -- A retry of a stored append is answered as such whatever its
                -- expected version says: look its ids up before refusing it.
                IF NOT check_ids THEN
                    EXECUTE 'SELECT EXISTS (SELECT 1 FROM events ev WHERE ev.id = ANY ($1))'
                    INTO fits
                    USING e_id[first_e : first_e + r_events[i] - 1];
                    IF fits THEN
                        o_outcome[i] := 1;
                    END IF;
                END IF;
            END IF;
        END IF;
        first_e := first_e + r_events[i];
    END LOOP;

    IF accepted > 0 THEN
        INSERT INTO streams AS s (name, version)
        SELECT n.name, n.version
        FROM unnest(stream_names, s_version, s_touched) AS n (name, version, touched)
        WHERE n.touched
        ORDER BY n.name
        ON CONFLICT (name) DO UPDATE SET version = excluded.version, updated_at = clock_timestamp();

        UPDATE all_head SET position = all_head.position + accepted
        RETURNING all_head.position - accepted INTO base;

        INSERT INTO events (position, stream, version, id, type, data, metadata, correlation_id, causation_id)
        SELECT base + o_offset[e.req] + e.idx + 1, stream_names[r_stream[e.req]], o_version[e.req] + e.idx,
               e.id, e.type, e.data, e.metadata, e.correlation_id, e.causation_id
        FROM unnest(e_request, e_index, e_id, e_type, e_data, e_metadata, e_correlation_id, e_causation_id)
                 AS e (req, idx, id, type, data, metadata, correlation_id, causation_id)
        WHERE o_outcome[e.req] = 0;
    END IF;

    RETURN QUERY
    SELECT o.outcome, o.version, CASE WHEN o.outcome = 0 THEN base + o.offset_ + 1 END
    FROM unnest(o_outcome, o_version, o_offset) AS o (outcome, version, offset_);
END;
$$;
