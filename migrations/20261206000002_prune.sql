-- Bounded state (ARCHITECTURE, "What the state keeps"):
-- a settled message a complete listing no longer shows is `gone_since` then, and its row
-- is dropped once it has been gone for 30 days; runs are kept for 30 days (and each
-- account's last run and last success for good). What was dropped still counts in
-- `status`' totals through `pruned`.
ALTER TABLE ledger ADD COLUMN gone_since INTEGER;
CREATE INDEX runs_account_id ON runs (account, id);
CREATE INDEX runs_started ON runs (started_at);
CREATE TABLE pruned (
    account   TEXT PRIMARY KEY NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0
) STRICT;
