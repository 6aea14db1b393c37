//! The VFS that gathers a transaction's WAL frames (crates/sys `wal`), used by the ledger's
//! connection: every commit is whole in the WAL file before another connection can see it,
//! through SQLite's own paths (a new WAL, a WAL used again after a checkpoint, a
//! transaction larger than the page cache whose frames are written in place and
//! re-checksummed), and the database stays intact.

use mailferry_testkit::writes_of_this_thread;
use rusqlite::{Connection, OpenFlags};

/// A WAL-mode database with a table of numbered blobs, made with the default VFS (as the
/// pool makes the ledger's), and a connection to it through the gathering VFS.
fn open() -> (tempfile::TempDir, Connection, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    let plain = Connection::open(&path).expect("open");
    plain
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL UNIQUE, v BLOB NOT NULL);
             CREATE TABLE total (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
             INSERT INTO total VALUES (1, 0);",
        )
        .expect("schema");
    let vfs = mailferry_sys::wal::register().expect("register");
    let gathering = Connection::open_with_flags_and_vfs(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        vfs,
    )
    .expect("open through the VFS");
    gathering
        .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;")
        .expect("pragmas");
    (dir, gathering, plain)
}

/// Adds `n` rows of 1,500 bytes (several pages with the index) and counts them in `total`.
fn add(c: &Connection, from: i64, n: i64) {
    let tx = c.unchecked_transaction().expect("begin");
    for id in from..from + n {
        tx.execute(
            "INSERT INTO t (id, k, v) VALUES (?1, ?2, ?3)",
            (
                id,
                format!("key-{id:08}"),
                vec![u8::try_from(id % 251).expect("byte"); 1500],
            ),
        )
        .expect("insert");
    }
    tx.execute("UPDATE total SET n = n + ?1", [n])
        .expect("total");
    tx.commit().expect("commit");
}

fn seen(c: &Connection) -> (i64, i64, i64) {
    c.query_row(
        "SELECT (SELECT count(*) FROM t), (SELECT coalesce(sum(length(v)), 0) FROM t), (SELECT n FROM total)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .expect("read")
}

/// The database is intact, and every commit was written before its barrier, where a
/// write error could still fail the commit.
fn intact(c: &Connection) {
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    assert_eq!(mailferry_sys::wal::written_at_barrier(), 0);
}

#[test]
fn every_commit_is_whole_for_another_connection_at_once() {
    let (_dir, gathering, plain) = open();
    let mut rows = 0;
    for round in 0..300 {
        let before = writes_of_this_thread();
        add(&gathering, rows + 1, 3);
        rows += 3;
        // About five frames (the table, its index, `total`): gathered into one write, two
        // when the commit starts a new WAL (its header first).
        let writes = writes_of_this_thread() - before;
        assert!(writes <= 2, "commit {round} took {writes} writes");
        // Another connection (the pool's, `mailferry status`) reads the commit right away.
        assert_eq!(
            seen(&plain),
            (rows, rows * 1500, rows),
            "after commit {round}"
        );
        if round % 50 == 49 {
            // Checkpointed, the WAL is used again from its start by the next commit.
            let (busy, _, _): (i64, i64, i64) = plain
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .expect("checkpoint");
            assert_eq!(busy, 0, "the checkpoint completed");
        }
    }
    intact(&plain);
    intact(&gathering);
}

#[test]
fn a_transaction_larger_than_the_page_cache_is_whole() {
    let (dir, gathering, plain) = open();
    add(&gathering, 1, 10);
    // A cache of 8 pages: the transaction spills its pages to the WAL before its commit
    // (1.4 MB of frames, written in pieces), writes some of them again in place, and
    // SQLite re-checksums those frames at the commit.
    gathering
        .execute_batch("PRAGMA cache_size = 8;")
        .expect("cache");
    let tx = gathering.unchecked_transaction().expect("begin");
    for id in 11..=400 {
        tx.execute(
            "INSERT INTO t (id, k, v) VALUES (?1, ?2, ?3)",
            (id, format!("key-{id:08}"), vec![1u8; 1500]),
        )
        .expect("insert");
    }
    for pass in 2..4u8 {
        tx.execute("UPDATE t SET v = ?1 WHERE id % 3 <> 0", [vec![pass; 1500]])
            .expect("update");
    }
    tx.execute("UPDATE total SET n = 400", []).expect("total");
    tx.commit().expect("commit");
    let (last, third): (Vec<u8>, Vec<u8>) = plain
        .query_row(
            "SELECT (SELECT v FROM t WHERE id = 400), (SELECT v FROM t WHERE id = 399)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("rows");
    assert_eq!((last, third), (vec![3u8; 1500], vec![1u8; 1500]));
    assert_eq!(seen(&plain), (400, 400 * 1500, 400));
    intact(&plain);
    drop(gathering);
    // What a new connection finds from the files alone.
    let again = Connection::open(dir.path().join("t.db")).expect("reopen");
    assert_eq!(seen(&again), (400, 400 * 1500, 400));
    intact(&again);
}

#[test]
fn writes_of_another_connection_between_commits_are_kept() {
    let (_dir, gathering, plain) = open();
    for round in 0..100 {
        add(&gathering, round * 10 + 1, 5);
        // The pool's writes land in the same WAL between the ledger's.
        add(&plain, round * 10 + 6, 5);
    }
    assert_eq!(seen(&gathering), (1000, 1000 * 1500, 1000));
    assert_eq!(seen(&plain), (1000, 1000 * 1500, 1000));
    intact(&plain);
}
