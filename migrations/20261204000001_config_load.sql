-- What the running service made of the configuration the last time it read it on request
-- (SIGUSR1 from `mailferry run-now` or `auth`, SIGHUP). A file it could not read leaves it
-- running the one it read before: `run-now` and `status` say so instead of reporting runs
-- that used the old settings as if the fix had been applied. `serial` grows with each read.
CREATE TABLE config_load (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    serial INTEGER NOT NULL,
    at     INTEGER NOT NULL,
    error  TEXT
) STRICT;
