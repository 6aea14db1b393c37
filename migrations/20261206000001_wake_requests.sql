-- `run-now` and `auth` asking the running service to run accounts: one row per request and
-- account, answered by the run it caused (`run`), so that a command reports that run and
-- not whatever run came next (a push delivery, a round a reload cut short). Replaces
-- `wakeups`, which kept one row per account and so merged two requests into one.
DROP TABLE wakeups;
CREATE TABLE wake_requests (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    run     INTEGER
) STRICT;
CREATE INDEX wake_requests_pending ON wake_requests (account) WHERE run IS NULL;
