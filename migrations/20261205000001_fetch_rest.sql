-- A message the source would not hand out (Exchange's body-less FETCH for a message it
-- cannot render yet, Yahoo's NO to one message) rests until this time (unix seconds)
-- before it is asked for again; the pause grows with each failure. NULL: due now.
ALTER TABLE ledger ADD COLUMN not_before INTEGER;
