-- A long import in progress, per account and folder: how many messages it had to go when
-- it started, how many are done since, and when; `status` and `/metrics` show it. The row
-- goes when the folder's run completes.
CREATE TABLE progress (
    account    TEXT    NOT NULL,
    folder     TEXT    NOT NULL,
    total      INTEGER NOT NULL,
    done       INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (account, folder)
) STRICT;
