-- The UIDVALIDITY a folder had at its last listing: a change means every UID is new, and
-- what first-run excluded must be excluded again under the new UIDVALIDITY.
ALTER TABLE folders_seen ADD COLUMN uidvalidity INTEGER;
