-- POP3 sources identify messages by UIDL strings, not numeric UIDs: the ledger key becomes
-- (account, folder, uidvalidity, uid, uidl), with uid = 0 for POP3 and uidl = '' for IMAP.
CREATE TABLE ledger_new (
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
INSERT INTO ledger_new (id, account, folder, uidvalidity, uid, uidl, message_id, sha256, size, state,
                        attempts, destination, destination_id, last_error, first_seen, updated_at)
    SELECT id, account, folder, uidvalidity, uid, '', message_id, sha256, size, state,
           attempts, destination, destination_id, last_error, first_seen, updated_at
    FROM ledger;
DROP TABLE ledger;
ALTER TABLE ledger_new RENAME TO ledger;
CREATE INDEX ledger_content ON ledger (account, folder, sha256) WHERE state = 'delivered';
