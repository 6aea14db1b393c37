-- Folders watched with IMAP IDLE (`push = "idle"`): what `mailferry status` and /metrics
-- show, and every push login, which the login budget counts.
CREATE TABLE push (
    account         TEXT    NOT NULL,
    folder          TEXT    NOT NULL,
    -- connected | reconnecting | no idle | stopped
    state           TEXT    NOT NULL,
    connected_since INTEGER,
    last_event      INTEGER,
    last_latency_ms INTEGER,
    last_error      TEXT,
    PRIMARY KEY (account, folder)
) STRICT;

CREATE TABLE push_logins (
    account TEXT    NOT NULL,
    folder  TEXT    NOT NULL,
    at      INTEGER NOT NULL
) STRICT;
CREATE INDEX push_logins_by_folder ON push_logins (account, folder, at);
