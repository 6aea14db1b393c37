-- The ledger's fingerprint of a message's bytes is BLAKE3 from now on, written as
-- 'blake3:' and the hash in lowercase hex. Rows written before hold the bare SHA-256 hex:
-- they keep it, and mailferry computes a message's SHA-256 as well only when such rows
-- exist under another UIDVALIDITY of its folder (the duplicate check compares with both).
-- The index ledger_content follows the renamed column.
ALTER TABLE ledger RENAME COLUMN sha256 TO content_hash;
