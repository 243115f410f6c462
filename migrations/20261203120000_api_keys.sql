-- API keys (issue 12; API.md, "Security → API keys").
--
-- A key's token is `strata_<key_id>_<secret>`: the id says which row to read,
-- the secret proves the holder has the key. The token is shown once, at
-- creation, and never stored: a row holds the SHA-256 of the secret's 32
-- random bytes, so reading this table does not give anyone a working key.
-- A revoked key keeps its row (and its name) for the audit trail.
CREATE TABLE api_keys (
    -- Who the audit trail and the logs name: 1–100 characters of A-Z a-z 0-9 _ - .
    name        text COLLATE "C" PRIMARY KEY,
    -- 16 lowercase hex characters (64 random bits), not a secret.
    key_id      text COLLATE "C" NOT NULL UNIQUE CHECK (key_id ~ '^[0-9a-f]{16}$'),
    -- SHA-256 of the secret's bytes.
    secret_hash bytea       NOT NULL CHECK (length(secret_hash) = 32),
    -- [{"scope": "read", "streams": "account-"}, …]: at least one.
    grants      jsonb       NOT NULL
                CHECK (jsonb_typeof(grants) = 'array' AND jsonb_array_length(grants) > 0),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- NULL: the key does not expire.
    expires_at  timestamptz,
    -- NULL: not revoked. Set once; a second revocation keeps the first time.
    revoked_at  timestamptz
);
