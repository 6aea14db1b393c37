-- What `status`, /metrics and the status page read for every account, kept so that 1,000
-- accounts with a year of mail answer in one query per table, not a scan of the ledger.

-- Per account and local day (days since the epoch, in the machine's time zone when
-- written): messages delivered, runs that ended early, the slowest pushed delivery. The
-- status page's 30-day charts; pruned after 30 days with `runs`.
CREATE TABLE daily (
    account          TEXT    NOT NULL,
    day              INTEGER NOT NULL,
    delivered        INTEGER NOT NULL DEFAULT 0,
    failed_runs      INTEGER NOT NULL DEFAULT 0,
    worst_latency_ms INTEGER,
    PRIMARY KEY (account, day)
) STRICT, WITHOUT ROWID;
INSERT INTO daily (account, day, delivered, failed_runs)
    SELECT account, started_at / 86400, SUM(delivered), SUM(error IS NOT NULL)
    FROM runs GROUP BY account, started_at / 86400;
CREATE INDEX daily_day ON daily (day);

-- Ledger rows per account and state, kept by triggers. (Not INSERT OR IGNORE: inside a
-- trigger the outer statement's conflict handling wins, and the ledger's upsert has one.)
CREATE TABLE ledger_counts (
    account TEXT    NOT NULL,
    state   TEXT    NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (account, state)
) STRICT, WITHOUT ROWID;
INSERT INTO ledger_counts (account, state, n)
    SELECT account, state, COUNT(*) FROM ledger GROUP BY account, state;
CREATE TRIGGER ledger_counts_insert AFTER INSERT ON ledger BEGIN
    INSERT INTO ledger_counts (account, state, n) SELECT NEW.account, NEW.state, 0
        WHERE NOT EXISTS (SELECT 1 FROM ledger_counts WHERE account = NEW.account AND state = NEW.state);
    UPDATE ledger_counts SET n = n + 1 WHERE account = NEW.account AND state = NEW.state;
END;
CREATE TRIGGER ledger_counts_delete AFTER DELETE ON ledger BEGIN
    UPDATE ledger_counts SET n = n - 1 WHERE account = OLD.account AND state = OLD.state;
END;
CREATE TRIGGER ledger_counts_update AFTER UPDATE OF account, state ON ledger
    WHEN OLD.account IS NOT NEW.account OR OLD.state IS NOT NEW.state
BEGIN
    UPDATE ledger_counts SET n = n - 1 WHERE account = OLD.account AND state = OLD.state;
    INSERT INTO ledger_counts (account, state, n) SELECT NEW.account, NEW.state, 0
        WHERE NOT EXISTS (SELECT 1 FROM ledger_counts WHERE account = NEW.account AND state = NEW.state);
    UPDATE ledger_counts SET n = n + 1 WHERE account = NEW.account AND state = NEW.state;
END;

-- The last day's deliveries, and the refused messages, without a scan.
CREATE INDEX ledger_delivered_at ON ledger (updated_at) WHERE state = 'delivered';
CREATE INDEX ledger_refused ON ledger (account) WHERE state = 'refused';
