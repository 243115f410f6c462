-- Takes the next positions of `$all` and stores the events of an append group.
-- Updating the single all_head row takes its row lock, held until commit: the
-- transaction that takes positions first also commits first, so no reader of
-- `$all` can see position P before every position below P is visible
-- (docs/adr/0001-gap-free-all-log.md).
-- $1 int8    number of events
-- $2 text[]  stream of each event
-- $3 int8[]  version
-- $4 uuid[]  id
-- $5 text[]  type
-- $6 text[]  data (JSON text)
-- $7 text[]  metadata (JSON object text)
-- $8 uuid[]  correlation id
-- $9 uuid[]  causation id
-- Returns the position before the first event: event i (1-based) gets base + i.
WITH head AS (
    UPDATE all_head SET position = position + $1
    RETURNING position - $1 AS base
), stored AS (
    INSERT INTO events (position, stream, version, id, type, data, metadata, correlation_id, causation_id)
    SELECT head.base + e.ord, e.stream, e.version, e.id, e.type, e.data::jsonb, e.metadata::jsonb,
           e.correlation_id, e.causation_id
    FROM head,
         unnest($2::text[], $3::int8[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::uuid[], $9::uuid[])
             WITH ORDINALITY AS e (stream, version, id, type, data, metadata, correlation_id, causation_id, ord)
    RETURNING 1
)
SELECT base FROM head
