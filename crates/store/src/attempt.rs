//! The attempt: the ledger row written before a message is sent, and the record of an
//! accepted delivery written together with the next message's attempt.

use rusqlite::{Connection, OptionalExtension as _};

use crate::ledger::{Attempt, LedgerKey, LedgerState, MessageFacts};
use crate::{Store, StoreError, now};

// The statements below are plain single-row statements in one transaction. One statement
// doing it all (an `INSERT ... SELECT ... UNION ALL` upsert with `RETURNING`) had SQLite
// build five temporary B-trees per message, each with a zeroed page: about a sixth of the
// instructions a message cost (`benches/ledger.rs`, DECISIONS.md).

/// A write transaction on the ledger's connection, rolled back unless committed. It takes
/// the write lock at once (`BEGIN IMMEDIATE`): when another writer holds it, nothing has
/// been written yet, and [`Store::hot`] runs the whole operation again.
struct Write<'c> {
    c: &'c Connection,
    committed: bool,
}

impl<'c> Write<'c> {
    fn begin(c: &'c Connection) -> rusqlite::Result<Self> {
        c.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Self {
            c,
            committed: false,
        })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.c.prepare_cached("COMMIT")?.execute([])?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        if !self.committed {
            // Fails only when there is no transaction left to roll back.
            let _ = self.c.execute_batch("ROLLBACK");
        }
    }
}

/// Whether the same bytes with the same Message-ID were delivered from `key`'s folder
/// under another UIDVALIDITY: by their fingerprint, and by their SHA-256 where
/// [`MessageFacts::sha256`] has it. One lookup each in the partial index `ledger_content`
/// (`WHERE state = 'delivered'`, which serves only a query that names its predicate
/// literally; covered by tests/ledger.rs `same_content_under_new_uidvalidity_is_a_duplicate`).
fn delivered_elsewhere(
    c: &Connection,
    key: &LedgerKey,
    facts: &MessageFacts<'_>,
) -> rusqlite::Result<bool> {
    let mut stmt = c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM ledger WHERE account = ?1 AND folder = ?2 AND content_hash = ?3 \
         AND uidvalidity <> ?4 AND state = 'delivered' AND message_id IS ?5)",
    )?;
    for hash in std::iter::once(facts.content_hash).chain(facts.sha256) {
        let seen: bool = stmt.query_row(
            (
                &key.account,
                &key.folder,
                hash,
                i64::from(key.uidvalidity),
                facts.message_id,
            ),
            |r| r.get(0),
        )?;
        if seen {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Inserts the row of a message seen for the first time: an attempt, or, for content
/// delivered under another UIDVALIDITY, a duplicate. Returns its state; `None` when the
/// row exists (it is left as it was).
fn insert_new(
    c: &Connection,
    key: &LedgerKey,
    facts: &MessageFacts<'_>,
    size: i64,
    now: i64,
) -> rusqlite::Result<Option<LedgerState>> {
    let state = if delivered_elsewhere(c, key, facts)? {
        LedgerState::Duplicate
    } else {
        LedgerState::Attempt
    };
    let (uid, uidl) = key.columns();
    let inserted = c
        .prepare_cached(
            "INSERT INTO ledger (account, folder, uidvalidity, uid, uidl, message_id, content_hash, size, state, \
             attempts, destination, first_seen, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12) \
             ON CONFLICT (account, folder, uidvalidity, uid, uidl) DO NOTHING",
        )?
        .execute((
            &key.account,
            &key.folder,
            i64::from(key.uidvalidity),
            uid,
            uidl,
            facts.message_id,
            facts.content_hash,
            size,
            state,
            i64::from(state == LedgerState::Attempt),
            facts.destination,
            now,
        ))?;
    Ok((inserted == 1).then_some(state))
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
        // A message seen for the first time (nearly every one) takes one transaction.
        let now = now();
        let inserted = self
            .hot(|c| {
                let write = Write::begin(c)?;
                let inserted = insert_new(c, key, facts, size, now)?;
                write.commit()?;
                Ok(inserted)
            })
            .await?;
        self.continue_attempt(key, facts, inserted).await
    }

    /// [`Self::begin_attempt`] after its first step ran (here, or inside
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
    /// transaction the attempt of the next message, `key`, as [`Self::begin_attempt`]'s
    /// first step would: one commit instead of two, at the moment the record alone would
    /// have been written. Returns that insert's result, for [`Self::continue_attempt`].
    ///
    /// One transaction, run without a pause on this thread, so it is all or nothing, also
    /// if the caller stops waiting for it. `done`'s row (nothing is written when it is
    /// missing) becomes `delivered`; the new one is inserted, or left alone when its row
    /// exists. `done` comes first, so a key listed twice is recorded delivered and then
    /// found settled.
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
            let write = Write::begin(c)?;
            c.prepare_cached(
                "UPDATE ledger SET state = ?1, destination_id = ?2, last_error = NULL, updated_at = ?3 \
                 WHERE account = ?4 AND folder = ?5 AND uidvalidity = ?6 AND uid = ?7 AND uidl = ?8",
            )?
            .execute((
                LedgerState::Delivered,
                destination_id,
                now,
                &done.account,
                &done.folder,
                i64::from(done.uidvalidity),
                done_uid,
                done_uidl,
            ))?;
            let inserted = insert_new(c, key, facts, size, now)?;
            write.commit()?;
            Ok(inserted)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use mailferry_core::MessageKey;
    use rusqlite::StatementStatus;
    use rusqlite::trace::{TraceEvent, TraceEventCodes};

    use crate::Store;
    use crate::ledger::{LedgerKey, MessageFacts};

    /// Steps of SQLite's virtual machine, trigger programs included, per statement text: a
    /// cached statement's counter grows with every run, so its last value is its total.
    static STEPS: Mutex<Option<HashMap<String, i64>>> = Mutex::new(None);

    fn note_steps(event: TraceEvent<'_>) {
        if let TraceEvent::Profile(stmt, _) = event {
            let steps = i64::from(stmt.get_status(StatementStatus::VmStep));
            STEPS
                .lock()
                .expect("steps")
                .get_or_insert_default()
                .insert(stmt.sql().into_owned(), steps);
        }
    }

    fn key(uid: u32) -> LedgerKey {
        LedgerKey {
            account: "a".into(),
            folder: "INBOX".into(),
            uidvalidity: 7,
            key: MessageKey::Uid(uid),
        }
    }

    /// What SQLite does per delivered message, counted in its virtual machine's steps (the
    /// same on every machine, unlike time): each message's record with the next one's
    /// attempt. One `INSERT ... SELECT ... UNION ALL` upsert with `RETURNING`, and the
    /// counts' triggers as an insert of the missing row and an update, took 504 steps a
    /// message; plain statements in one transaction, and upserts in the triggers, 332 (465
    /// with only the triggers changed); the state's CHECK as comparisons, not an IN list
    /// with its temporary index built at each insert and update, 297.
    #[tokio::test]
    async fn a_delivery_and_the_next_attempt_take_few_sqlite_steps() {
        const MESSAGES: u32 = 200;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("open");
        store
            .hot
            .run(&mut |c| {
                c.trace_v2(TraceEventCodes::SQLITE_TRACE_PROFILE, Some(note_steps));
                Ok(())
            })
            .expect("hook");
        let hash = |uid: u32| format!("blake3:{uid:064x}");
        fn facts(hash: &str) -> MessageFacts<'_> {
            MessageFacts {
                message_id: Some("m@x"),
                content_hash: hash,
                sha256: None,
                size: 10,
                destination: "home",
            }
        }
        let first = hash(0);
        store
            .begin_attempt(&key(0), &facts(&first))
            .await
            .expect("begin");
        STEPS.lock().expect("steps").take();
        for uid in 1..=MESSAGES {
            let h = hash(uid);
            let inserted = store
                .mark_delivered_and_begin(&key(uid - 1), "250 ok", &key(uid), &facts(&h))
                .await
                .expect("record");
            store
                .continue_attempt(&key(uid), &facts(&h), inserted)
                .await
                .expect("attempt");
        }
        let steps: i64 = STEPS
            .lock()
            .expect("steps")
            .take()
            .unwrap_or_default()
            .values()
            .sum();
        let per_message = steps / i64::from(MESSAGES);
        assert!(
            per_message <= 315,
            "{per_message} SQLite steps per delivered message"
        );
    }
}
