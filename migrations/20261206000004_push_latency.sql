-- Pushed mail's arrival-to-delivery time, one row per delivering pass that followed an
-- announcement, for the status page's 30-day charts. Pruned with `runs` (30 days).
CREATE TABLE push_latency (
    account    TEXT    NOT NULL,
    folder     TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX push_latency_at ON push_latency (at);
