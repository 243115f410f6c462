-- Moves the streams of an append group to their new versions.
-- $1 text[]  existing streams (locked by append_lock.sql)
-- $2 int8[]  their new versions
-- $3 text[]  new streams, sorted
-- $4 int8[]  their versions
-- Returns how many new streams were created; fewer than given means another
-- transaction created one of them first, and the group must start again.
WITH updated AS (
    UPDATE streams AS s
    SET version = u.version, updated_at = clock_timestamp()
    FROM unnest($1::text[], $2::int8[]) AS u (name, version)
    WHERE s.name = u.name
    RETURNING 1
), created AS (
    INSERT INTO streams (name, version)
    SELECT name, version FROM unnest($3::text[], $4::int8[]) AS n (name, version)
    ON CONFLICT (name) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM created) AS created, (SELECT count(*) FROM updated) AS updated
