-- The ledger: one row per message seen at a source, keyed by where it was seen:
-- (account, folder, uidvalidity, uid, uidl), with uidl = '' for IMAP and uid = 0,
-- uidvalidity = 0 for POP3.
-- A row moves attempt -> delivered (or deferred / refused); 'duplicate' marks a message
-- already delivered under an earlier UIDVALIDITY of the same folder.
CREATE TABLE ledger (
    id             INTEGER PRIMARY KEY,
    account        TEXT    NOT NULL,
    folder         TEXT    NOT NULL,
    uidvalidity    INTEGER NOT NULL,
    uid            INTEGER NOT NULL,
    uidl           TEXT    NOT NULL DEFAULT '',
    message_id     TEXT,
    sha256         TEXT    NOT NULL,
    size           INTEGER NOT NULL,
    state          TEXT    NOT NULL
                   CHECK (state IN ('attempt', 'delivered', 'deferred', 'refused', 'duplicate')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    destination    TEXT    NOT NULL,
    destination_id TEXT,
    last_error     TEXT,
    first_seen     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (account, folder, uidvalidity, uid, uidl)
);

-- Recognises the same bytes under a new UIDVALIDITY.
CREATE INDEX ledger_content ON ledger (account, folder, sha256)
    WHERE state = 'delivered';

-- One row per account per run, for the summary and `status`.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    account     TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    fetched     INTEGER NOT NULL DEFAULT 0,
    delivered   INTEGER NOT NULL DEFAULT 0,
    skipped     INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    error       TEXT
);
CREATE INDEX runs_account ON runs (account, started_at);
