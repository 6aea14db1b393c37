-- OAuth2 tokens, one row per account or destination that signs in with OAuth2.
-- The file is 0600 in a 0700 directory; the tokens are as secret as passwords.
CREATE TABLE tokens (
    owner         TEXT PRIMARY KEY,      -- 'account:NAME' or 'destination:NAME'
    client_id     TEXT NOT NULL,         -- the registration the refresh token belongs to
    token_url     TEXT NOT NULL,         -- the endpoint it is refreshed at
    refresh_token TEXT NOT NULL,         -- the newest one: rotation kills the older ones
    access_token  TEXT,
    expires_at    INTEGER NOT NULL,      -- access token expiry, unix seconds
    scopes        TEXT NOT NULL,         -- space-separated, as granted
    subject       TEXT,                  -- who signed in, when the provider said
    signed_in_at  INTEGER NOT NULL,      -- last `mailferry auth`
    refreshed_at  INTEGER NOT NULL,      -- last successful refresh (keeps the token alive)
    parked        TEXT                   -- why the refresh token is dead; NULL while usable
) STRICT;
