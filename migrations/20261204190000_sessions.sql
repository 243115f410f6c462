-- Browser sessions (issue 12; API.md, "Security → Sessions").
--
-- `POST /auth/session` turns a bearer API key into the cookie
-- `strata_session=<secret>`. The secret (32 random bytes) is never stored: a
-- row holds its SHA-256, so reading this table gives no one a working
-- session. A session is valid for its key's grants only while the key is:
-- each use checks the key again (revoked, expired), so a row says only which
-- key and until when.
CREATE TABLE sessions (
    -- SHA-256 of the secret's bytes.
    secret_hash bytea PRIMARY KEY CHECK (length(secret_hash) = 32),
    -- The key it was made from (keys are revoked, never deleted; the CASCADE
    -- is for an operator who deletes a key's row by hand).
    key_name    text COLLATE "C" NOT NULL REFERENCES api_keys (name) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- At most 12 hours after it was made, and never after the key's expiry
    -- (by the node's clock, which may differ a little from created_at's).
    expires_at  timestamptz NOT NULL
);

-- Starting a session deletes the expired ones.
CREATE INDEX sessions_expires_at ON sessions (expires_at);
-- And those of revoked keys; and finds a key's sessions.
CREATE INDEX sessions_key_name ON sessions (key_name);
