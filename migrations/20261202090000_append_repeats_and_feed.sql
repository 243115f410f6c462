-- strata_append, second form (issue 11): repeats cost what they should, and
-- the node's own commits reach its live feed without being read back.
--
-- Changes from the first form (20261125000001_event_store.sql, whose header
-- still describes the parameters and outcomes 0-3):
--
-- feed       new parameter: also return the stored events, one row each
--            (outcome 9) after the request rows, with their position,
--            created_at and data/metadata exactly as PostgreSQL prints them,
--            so that the live feed sends what a read would return. The server
--            asks for it only while someone on the node follows the feed.
-- check_ids  the server now turns it on by itself while it has seen repeats
--            lately, and for a whole group after the unique index refused it,
--            rather than running each request alone.
-- outcome 4  new: an exact repeat (every id stored, in this stream, at
--            consecutive versions and positions, in this order). version and
--            position are those of its first event; nothing written. Other
--            requests whose ids are stored keep outcome 1 and are judged by
--            the server.

DROP FUNCTION strata_append(boolean, text[], int[], bigint[], int[], int[], int[], uuid[], text[],
                            jsonb[], jsonb[], uuid[], uuid[]);

CREATE FUNCTION strata_append(
    check_ids        boolean,
    feed             boolean,
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
) RETURNS TABLE (outcome smallint, version bigint, "position" bigint,
                 created_at timestamptz, data text, metadata text)
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
    o_position bigint[] := array_fill(NULL::bigint, ARRAY[requests_n]);
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
    found_n    bigint;
    v_min      bigint;
    v_max      bigint;
    p_min      bigint;
    p_max      bigint;
    same       boolean;
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

    -- Static statements below (not EXECUTE): their plans are kept across
    -- calls, which matters while every group looks its ids up.
    IF check_ids THEN
        SELECT array_agg(ev.id) INTO stored_ids FROM events ev WHERE ev.id = ANY (e_id);
    END IF;

    FOR i IN 1 .. requests_n LOOP
        k := r_stream[i];
        expected := r_expected[i];
        current := s_version[k];
        IF s_tomb[k] THEN
            o_outcome[i] := 3;
        ELSIF stored_ids IS NOT NULL AND e_id[first_e : first_e + r_events[i] - 1] && stored_ids THEN
            -- An exact repeat is answered here, without a second round trip.
            SELECT count(*), min(ev.version - t.ord), max(ev.version - t.ord),
                   min(ev.position - t.ord), max(ev.position - t.ord),
                   bool_and(ev.stream = stream_names[k])
            INTO found_n, v_min, v_max, p_min, p_max, same
            FROM unnest(e_id[first_e : first_e + r_events[i] - 1]) WITH ORDINALITY AS t (id, ord)
            JOIN events ev ON ev.id = t.id;
            IF found_n = r_events[i] AND v_min = v_max AND p_min = p_max AND same THEN
                o_outcome[i] := 4;
                o_version[i] := v_min + 1;
                o_position[i] := p_min + 1;
            ELSE
                o_outcome[i] := 1;
            END IF;
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
    SELECT o.outcome, o.version,
           CASE WHEN o.outcome = 0 THEN base + o.offset_ + 1 ELSE o.position_ END,
           NULL::timestamptz, NULL::text, NULL::text
    FROM unnest(o_outcome, o_version, o_offset, o_position) AS o (outcome, version, offset_, position_);

    IF feed AND accepted > 0 THEN
        RETURN QUERY
        SELECT 9::smallint, ev.version, ev.position, ev.created_at, ev.data::text, ev.metadata::text
        FROM events ev
        WHERE ev.position > base AND ev.position <= base + accepted
        ORDER BY ev.position;
    END IF;
END;
$$;
