-- The import rate learned per Gmail mailbox from its quota refusals (requests per second),
-- so that a restart starts at the project's quota instead of finding it again.
CREATE TABLE gmail_pace (
    mailbox TEXT PRIMARY KEY NOT NULL,
    rate REAL NOT NULL,
    updated_at INTEGER NOT NULL
);
