-- Locks the streams of an append group and looks up client-supplied event ids.
-- $1 text[]  the group's stream names, sorted (locks are taken in this order,
--            so two groups never wait on each other in a cycle)
-- $2 uuid[]  the client-supplied event ids of the group
-- Rows: kind 's' (a locked stream) or 'e' (an event id already stored).
WITH locked AS (
    SELECT name, version, first_version, tombstoned
    FROM streams
    WHERE name = ANY($1)
    ORDER BY name
    FOR UPDATE
)
SELECT 's' AS kind, name AS stream, version, first_version, tombstoned,
       NULL::uuid AS id, NULL::bigint AS position
FROM locked
UNION ALL
SELECT 'e', stream, version, NULL, NULL, id, position
FROM events
WHERE id = ANY($2)
