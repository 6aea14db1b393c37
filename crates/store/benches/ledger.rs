//! Benchmark (not a test): what the ledger costs per delivered message, the way the
//! deliverer writes it (each message's record together with the next one's attempt), in
//! CPU time of this process (user + system) and in WAL frames.
//!
//!   cargo bench -p mailferry-store --bench ledger [-- MESSAGES]   (20,000)

use std::time::Instant;

use mailferry_core::MessageKey;
use mailferry_store::{LedgerKey, MessageFacts, Store};

fn key(uid: u32) -> LedgerKey {
    LedgerKey {
        account: "bench".into(),
        folder: "INBOX".into(),
        uidvalidity: 1_700_000_000,
        key: MessageKey::Uid(uid),
    }
}

fn facts<'a>(hash: &'a str, message_id: &'a str) -> MessageFacts<'a> {
    MessageFacts {
        message_id: Some(message_id),
        content_hash: hash,
        sha256: None,
        size: 100_000,
        destination: "home",
    }
}

/// User and system CPU time of this process so far, in seconds (`/proc/self/stat`, in
/// the kernel's clock ticks of 10 ms: a run of 20,000 messages takes over a second).
fn cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses: utime and stime are the
    // 12th and 13th of them.
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let mut fields = after.split(' ').skip(11);
    let mut ticks = || {
        fields
            .next()
            .and_then(|f| f.parse::<f64>().ok())
            .expect("stat field")
            / 100.0
    };
    (ticks(), ticks())
}

fn main() {
    let messages: u32 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or(20_000, |a| a.parse().expect("MESSAGES is a number"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("open");
        let hash = |uid: u32| format!("blake3:{:064x}", u128::from(uid).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834));
        let id = |uid: u32| format!("<{uid}@origin.example>");
        let (h, m) = (hash(1), id(1));
        store.begin_attempt(&key(1), &facts(&h, &m)).await.expect("begin");
        let wal = dir.path().join("mailferry.db-wal");
        let started = Instant::now();
        let (u0, s0) = cpu();
        for uid in 2..=messages {
            let (h, m) = (hash(uid), id(uid));
            let inserted = store
                .mark_delivered_and_begin(&key(uid - 1), "250 ok", &key(uid), &facts(&h, &m))
                .await
                .expect("record");
            store
                .continue_attempt(&key(uid), &facts(&h, &m), inserted)
                .await
                .expect("attempt");
        }
        let (u1, s1) = cpu();
        let n = f64::from(messages - 1);
        println!(
            "{} messages recorded in {:.2} s: {:.1} us CPU each (user {:.1}, system {:.1}); WAL {:.1} MB",
            messages - 1,
            started.elapsed().as_secs_f64(),
            (u1 - u0 + s1 - s0) / n * 1e6,
            (u1 - u0) / n * 1e6,
            (s1 - s0) / n * 1e6,
            std::fs::metadata(&wal).map_or(0.0, |m| m.len() as f64 / 1e6),
        );
        store.close().await;
    });
}
