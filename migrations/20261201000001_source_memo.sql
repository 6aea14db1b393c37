-- What a source must remember about itself between runs: for POP3, how its messages are
-- keyed ("uidl", or "headers" for a server without UIDL). Switching keys would make every
-- message look new, so a choice once made is kept.
CREATE TABLE source_memo (
    account TEXT PRIMARY KEY,
    memo    TEXT NOT NULL
) STRICT;
