-- The ledger's counts per account and state: one upsert per change instead of an insert
-- of the missing row followed by an update (benches/ledger.rs: about a sixth less of
-- SQLite's work per delivered message, DECISIONS.md). An upsert's own conflict target
-- holds inside a trigger even when the statement that fires it is itself an upsert; what
-- 20261206000004 notes of INSERT OR IGNORE (overridden by the outer statement's conflict
-- handling) does not apply to it.
DROP TRIGGER ledger_counts_insert;
CREATE TRIGGER ledger_counts_insert AFTER INSERT ON ledger BEGIN
    INSERT INTO ledger_counts (account, state, n) VALUES (NEW.account, NEW.state, 1)
        ON CONFLICT (account, state) DO UPDATE SET n = n + 1;
END;
DROP TRIGGER ledger_counts_update;
CREATE TRIGGER ledger_counts_update AFTER UPDATE OF account, state ON ledger
    WHEN OLD.account IS NOT NEW.account OR OLD.state IS NOT NEW.state
BEGIN
    UPDATE ledger_counts SET n = n - 1 WHERE account = OLD.account AND state = OLD.state;
    INSERT INTO ledger_counts (account, state, n) VALUES (NEW.account, NEW.state, 1)
        ON CONFLICT (account, state) DO UPDATE SET n = n + 1;
END;
