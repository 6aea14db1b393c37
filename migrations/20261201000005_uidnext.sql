-- The UIDNEXT of a folder after its last complete run: the next poll lists only UIDs from
-- there on (and the messages still unsettled), so an unchanged folder costs one EXAMINE.
ALTER TABLE folders_seen ADD COLUMN uidnext INTEGER;
