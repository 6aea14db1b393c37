-- The ledger's CHECK on `state` as comparisons instead of an IN list. SQLite evaluates an
-- IN list of more than two constants through a temporary index that it builds afresh at
-- every INSERT and at every UPDATE of `state`: twice for each delivered message
-- (benches/ledger.rs, DECISIONS.md). The two accept exactly the same values, so no row
-- changes and the table's definition is edited in place, the way SQLite documents for
-- schema changes that leave the stored content as it is (lang_altertable.html, "Making
-- Other Kinds Of Table Schema Changes"); rebuilding the table would copy every row.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
    SET sql = replace(sql,
        'CHECK (state IN (''attempt'', ''delivered'', ''deferred'', ''refused'', ''duplicate''))',
        'CHECK (state = ''attempt'' OR state = ''delivered'' OR state = ''deferred'' OR state = ''refused'' OR state = ''duplicate'')')
    WHERE type = 'table' AND name = 'ledger';
PRAGMA writable_schema = RESET;
-- The edit alone leaves the schema's version as it was, and a connection that read the
-- schema before would go on with the definition it parsed; this statement, like any
-- change to the schema, counts the version up (the documented procedure's
-- `PRAGMA schema_version = X+1`, which a script cannot compute).
CREATE TABLE ledger_state_check_edited (x);
DROP TABLE ledger_state_check_edited;
