//! The attempt: the ledger row written before a message is sent, and the record of an
//! accepted delivery written together with the next message's attempt.

use rusqlite::{OptionalExtension as _, Statement};

use crate::ledger::{Attempt, LedgerKey, LedgerState, MessageFacts};
use crate::{Store, StoreError, now};

/// The new row of a message seen for the first time, as a SELECT: an attempt, or a
/// duplicate when the same bytes and Message-ID were delivered from the folder under
/// another UIDVALIDITY. Parameters ?1-?11, bound by [`bind_new_row`]. A macro, so that
/// both statements that insert it are one literal.
macro_rules! new_row {
    () => {
        "SELECT ?1, ?2, ?3, ?4, ?5, ?7, ?6, ?8, CASE WHEN seen THEN 'duplicate' ELSE 'attempt' END, \
         NOT seen, ?9, NULL, ?10, ?10 FROM (SELECT EXISTS (SELECT 1 FROM ledger \
         WHERE account = ?1 AND folder = ?2 AND content_hash IN (?6, ?11) AND uidvalidity <> ?3 \
         AND state = 'delivered' AND message_id IS ?7) AS seen) WHERE true "
    };
}

/// Binds [`new_row`]'s ?1-?11.
fn bind_new_row(
    stmt: &mut Statement<'_>,
    key: &LedgerKey,
    facts: &MessageFacts<'_>,
    size: i64,
    now: i64,
) -> rusqlite::Result<()> {
    let (uid, uidl) = key.columns();
    stmt.raw_bind_parameter(1, &key.account)?;
    stmt.raw_bind_parameter(2, &key.folder)?;
    stmt.raw_bind_parameter(3, i64::from(key.uidvalidity))?;
    stmt.raw_bind_parameter(4, uid)?;
    stmt.raw_bind_parameter(5, uidl)?;
    stmt.raw_bind_parameter(6, facts.content_hash)?;
    stmt.raw_bind_parameter(7, facts.message_id)?;
    stmt.raw_bind_parameter(8, size)?;
    stmt.raw_bind_parameter(9, facts.destination)?;
    stmt.raw_bind_parameter(10, now)?;
    stmt.raw_bind_parameter(11, facts.sha256)
}

impl Store {
    /// Records that `key` is about to be delivered, before anything is sent, so that a
    /// crash during delivery is detectable. Recognises content already delivered under
    /// another UIDVALIDITY of the same folder and records it as a duplicate instead.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn begin_attempt(
        &self,
        key: &LedgerKey,
        facts: &MessageFacts<'_>,
    ) -> Result<Attempt, StoreError> {
        let size = i64::try_from(facts.size).map_err(|_| StoreError::Range("size"))?;
        // A message seen for the first time (nearly every one) takes one statement.
        let inserted = self.insert_new(key, facts, size, now()).await?;
        self.continue_attempt(key, facts, inserted).await
    }

    /// [`Self::begin_attempt`] after its first statement ran (here, or inside
    /// [`Self::mark_delivered_and_begin`]): `inserted` is what that insert returned (the
    /// new row's state, `None` when the row existed).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn continue_attempt(
        &self,
        key: &LedgerKey,
        facts: &MessageFacts<'_>,
        inserted: Option<LedgerState>,
    ) -> Result<Attempt, StoreError> {
        match inserted {
            Some(LedgerState::Duplicate) => return Ok(Attempt::Duplicate),
            Some(_) => return Ok(Attempt::Fresh),
            None => {}
        }
        let now = now();
        let size = i64::try_from(facts.size).map_err(|_| StoreError::Range("size"))?;
        let (uid, uidl) = key.columns();
        let uidvalidity = i64::from(key.uidvalidity);
        // The row exists (deferred, left open by a crash, or settled): one read, and for a
        // deferred row one write that makes it an attempt again. The write cannot race
        // another writer of the same key: one process holds an account at a time.
        self.hot(|c| {
            let previous: Option<(LedgerState, i64)> = c
                .prepare_cached(
                    "SELECT state, updated_at FROM ledger \
                     WHERE account = ?1 AND folder = ?2 AND uidvalidity = ?3 AND uid = ?4 AND uidl = ?5",
                )?
                .query_row(
                    (&key.account, &key.folder, uidvalidity, uid, uidl),
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match previous {
                // Left open: its age tells whether a destination's search can be trusted yet.
                Some((LedgerState::Attempt, since)) => return Ok(Attempt::Interrupted { since }),
                // A settled row is never reopened by a new attempt.
                Some((state, _)) if state.is_settled() => return Ok(Attempt::Settled),
                _ => {}
            }
            c.prepare_cached(
                "INSERT INTO ledger (account, folder, uidvalidity, uid, uidl, message_id, content_hash, size, state, attempts, \
                 destination, first_seen, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?11, ?11) \
                 ON CONFLICT (account, folder, uidvalidity, uid, uidl) DO UPDATE SET \
                 state = excluded.state, attempts = attempts + 1, message_id = excluded.message_id, \
                 content_hash = excluded.content_hash, size = excluded.size, destination = excluded.destination, \
                 updated_at = excluded.updated_at",
            )?
            .execute((
                &key.account,
                &key.folder,
                uidvalidity,
                uid,
                uidl,
                facts.message_id,
                facts.content_hash,
                size,
                LedgerState::Attempt,
                facts.destination,
                now,
            ))?;
            Ok(Attempt::Fresh)
        })
        .await
    }

    /// Inserts the row of a message seen for the first time, as an attempt or, for content
    /// delivered under another UIDVALIDITY, a duplicate; `None` when the row exists. One
    /// statement: every statement is a round trip to SQLite's thread, and this runs for
    /// every message.
    ///
    /// The state `delivered` is written as a literal: the partial index `ledger_content`
    /// (`WHERE state = 'delivered'`) serves only a query that names its predicate
    /// literally. Covered by tests/ledger.rs `same_content_under_new_uidvalidity_is_a_duplicate`.
    async fn insert_new(
        &self,
        key: &LedgerKey,
        facts: &MessageFacts<'_>,
        size: i64,
        now: i64,
    ) -> Result<Option<LedgerState>, StoreError> {
        self.hot(|c| {
            let mut stmt = c.prepare_cached(concat!(
                "INSERT INTO ledger (account, folder, uidvalidity, uid, uidl, message_id, content_hash, size, state, \
                 attempts, destination, destination_id, first_seen, updated_at) ",
                new_row!(),
                "ON CONFLICT (account, folder, uidvalidity, uid, uidl) DO NOTHING RETURNING state"
            ))?;
            bind_new_row(&mut stmt, key, facts, size, now)?;
            let mut rows = stmt.raw_query();
            rows.next()?.map(|r| r.get(0)).transpose()
        })
        .await
    }

    /// Whether `folder` holds messages delivered under a UIDVALIDITY other than
    /// `uidvalidity` whose fingerprint is a SHA-256 (written before BLAKE3): only then do
    /// the messages found under `uidvalidity` need their SHA-256 too
    /// ([`MessageFacts::sha256`]), so that one delivered before is still recognised.
    /// Where the folder never changed its UIDVALIDITY (nearly always) the answer comes
    /// from an empty index range.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn has_sha256_rows(
        &self,
        account: &str,
        folder: &str,
        uidvalidity: u32,
    ) -> Result<bool, StoreError> {
        // Two ranges of the key's index rather than `uidvalidity <> ?3`, which would read
        // every row of the folder. ?4 is the prefix of a BLAKE3 fingerprint.
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM ledger WHERE account = ?1 AND folder = ?2 AND uidvalidity < ?3 \
             AND state = 'delivered' AND content_hash <> '' AND substr(content_hash, 1, length(?4)) <> ?4) \
             OR EXISTS (SELECT 1 FROM ledger WHERE account = ?1 AND folder = ?2 AND uidvalidity > ?3 \
             AND state = 'delivered' AND content_hash <> '' AND substr(content_hash, 1, length(?4)) <> ?4)",
        )
        .bind(account)
        .bind(folder)
        .bind(i64::from(uidvalidity))
        .bind(mailferry_core::CONTENT_HASH_PREFIX)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records that the destination accepted `done` (with its id there), and in the same
    /// statement the attempt of the next message, `key`, as [`Self::begin_attempt`]'s
    /// first statement would: one commit and one trip to SQLite's thread instead of two,
    /// at the moment the record alone would have been written. Returns that insert's
    /// result, for [`Self::continue_attempt`].
    ///
    /// One statement, so it is all or nothing, also if the caller stops waiting for it.
    /// Both rows go through the ledger's upsert: `done`'s row (read from the ledger, so
    /// nothing is written when it is missing) updates to `delivered`; the new one is
    /// inserted, or left alone when its row exists. `done` comes first, so a key listed
    /// twice is recorded delivered and then found settled.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn mark_delivered_and_begin(
        &self,
        done: &LedgerKey,
        destination_id: &str,
        key: &LedgerKey,
        facts: &MessageFacts<'_>,
    ) -> Result<Option<LedgerState>, StoreError> {
        let now = now();
        let size = i64::try_from(facts.size).map_err(|_| StoreError::Range("size"))?;
        let (done_uid, done_uidl) = done.columns();
        self.hot(|c| {
            let mut stmt = c.prepare_cached(concat!(
                "INSERT INTO ledger (account, folder, uidvalidity, uid, uidl, message_id, content_hash, size, state, \
                 attempts, destination, destination_id, first_seen, updated_at) \
                 SELECT account, folder, uidvalidity, uid, uidl, message_id, content_hash, size, 'delivered', \
                 attempts, destination, ?16, first_seen, ?10 FROM ledger \
                 WHERE account = ?12 AND folder = ?13 AND uidvalidity = ?14 AND uid = ?15 AND uidl = ?17 \
                 UNION ALL ",
                new_row!(),
                "ON CONFLICT (account, folder, uidvalidity, uid, uidl) DO UPDATE SET \
                 state = excluded.state, destination_id = excluded.destination_id, last_error = NULL, \
                 updated_at = excluded.updated_at WHERE excluded.state = 'delivered' \
                 RETURNING state"
            ))?;
            bind_new_row(&mut stmt, key, facts, size, now)?;
            stmt.raw_bind_parameter(12, &done.account)?;
            stmt.raw_bind_parameter(13, &done.folder)?;
            stmt.raw_bind_parameter(14, i64::from(done.uidvalidity))?;
            stmt.raw_bind_parameter(15, done_uid)?;
            stmt.raw_bind_parameter(16, destination_id)?;
            stmt.raw_bind_parameter(17, done_uidl)?;
            // `done`'s row comes back as delivered; the new row as an attempt or a
            // duplicate. Every row is read: the statement completes with the last.
            let mut rows = stmt.raw_query();
            let mut inserted = None;
            while let Some(row) = rows.next()? {
                let state: LedgerState = row.get(0)?;
                if state != LedgerState::Delivered {
                    inserted = Some(state);
                }
            }
            Ok(inserted)
        })
        .await
    }
}
