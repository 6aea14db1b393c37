-- What the user was last told about an account: NULL (nothing, or it recovered), 'parked'
-- (needs a sign-in) or 'failing' (failed notify-after runs in a row). One notice per change.
ALTER TABLE schedule ADD COLUMN notified TEXT;
