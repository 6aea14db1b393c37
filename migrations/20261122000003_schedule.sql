-- The daemon's view of each account, for `mailferry status` and /healthz: written after
-- every run by `mailferry run`, read by anyone.
CREATE TABLE schedule (
    account      TEXT PRIMARY KEY,
    state        TEXT    NOT NULL,       -- ok | backing off | parked: needs auth | failing: needs a fix
    failures     INTEGER NOT NULL DEFAULT 0,   -- failed runs in a row
    next_run     INTEGER,                -- unix seconds
    last_run     INTEGER,
    last_success INTEGER,
    last_error   TEXT,
    last_hint    TEXT,
    interval_s   INTEGER NOT NULL
) STRICT;
