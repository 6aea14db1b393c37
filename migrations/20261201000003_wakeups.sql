-- Accounts `mailferry run-now` or `mailferry auth` asked the running service to run at
-- once (with their backoff reset); the service takes them when it gets SIGUSR1.
CREATE TABLE wakeups (
    account TEXT PRIMARY KEY,
    at      INTEGER NOT NULL
) STRICT;
