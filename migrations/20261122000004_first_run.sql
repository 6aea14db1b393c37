-- first-run = "new-only" | "since:DATE": what a folder held when mailferry first saw it and
-- was told not to deliver. Such keys count as settled, like delivered ones.
CREATE TABLE baseline (
    account     TEXT    NOT NULL,
    folder      TEXT    NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    uidl        TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (account, folder, uidvalidity, uid, uidl)
) STRICT;

-- Folders mailferry has seen at least once: a folder not listed here is on its first run.
CREATE TABLE folders_seen (
    account TEXT    NOT NULL,
    folder  TEXT    NOT NULL,
    since   INTEGER NOT NULL,
    PRIMARY KEY (account, folder)
) STRICT;
