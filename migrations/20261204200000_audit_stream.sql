-- The audit trail's stream row exists from the start (issue 12).
--
-- Every admin action appends to `$audit` inside its own transaction
-- (strata_pg::audit). strata_append locks a stream's row before it writes; a
-- stream that has no row yet is inserted instead, and two transactions that
-- both find no row collide on the events' (stream, version) key: on a fresh
-- database the first two concurrent admin actions (two `strata keys create`
-- at bootstrap, say) would fail one of them. With the row in place they
-- queue on its lock instead. Version 0: empty, and not listed.
INSERT INTO streams (name, version) VALUES ('$audit', 0) ON CONFLICT (name) DO NOTHING;
