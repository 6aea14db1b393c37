//! When each account runs: its interval with jitter after a good run; exponential backoff
//! (never below the interval, capped) after a failed one; exactly the pause a server asked
//! for (Outlook.com's "Suggested Backoff Time", POP3 `[LOGIN-DELAY]`) when it asked. One
//! task per account, so that a slow or failing account never delays another.
//!
//! This module does no I/O: [`drive`] takes the work as a [`Runner`], so its timing is
//! tested with tokio's paused clock.

use std::future::Future;
use std::time::Duration;

use mailferry_core::ErrorClass;
use tokio_util::sync::CancellationToken;

/// Backoff after failures grows to at most this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(4 * 3600);

/// How one run went, as far as scheduling cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The run completed (messages may still have been deferred or refused one by one).
    Success,
    /// The run ended at its time slice with messages left (a long import): the next
    /// starts at once.
    Continue,
    /// The run ended early.
    Failed {
        /// What kind of failure.
        class: ErrorClass,
        /// The pause the server asked for, if it did.
        retry_after: Option<Duration>,
    },
}

/// What `status` shows for an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountState {
    /// The last run succeeded.
    Ok,
    /// Failing for a passing reason; retried with growing pauses.
    BackingOff,
    /// The credentials were refused or the sign-in is dead: waiting for the user
    /// (`mailferry auth NAME`, a new password).
    Parked,
    /// The configuration cannot work (a missing folder, say): waiting for the user.
    Failing,
}

impl AccountState {
    /// The stable token stored in the `schedule` table.
    #[must_use]
    pub fn token(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::BackingOff => "backing-off",
            Self::Parked => "parked",
            Self::Failing => "failing",
        }
    }

    /// The state a stored token names (also the words earlier versions stored).
    #[must_use]
    pub fn from_stored(text: &str) -> Option<Self> {
        [Self::Ok, Self::BackingOff, Self::Parked, Self::Failing]
            .into_iter()
            .find(|s| text == s.token() || text == s.as_str())
    }

    /// The words shown to people.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::BackingOff => "backing off",
            Self::Parked => "parked: needs auth",
            Self::Failing => "failing: needs a fix",
        }
    }
}

/// One account's timing state.
#[derive(Debug, Clone, Default)]
pub struct Pacer {
    /// Failed runs in a row.
    pub failures: u32,
}

impl Pacer {
    /// A pacer that continues a stored failure count.
    #[must_use]
    pub fn with_failures(failures: u32) -> Self {
        Self { failures }
    }

    /// The pause before the next run after `verdict`, and the state to show. `unit` is a
    /// random number in `[0, 1)` for the jitter (up to a tenth of the pause).
    pub fn next(
        &mut self,
        interval: Duration,
        verdict: Verdict,
        unit: f64,
    ) -> (Duration, AccountState) {
        let unit = unit.clamp(0.0, 1.0);
        let jitter = |d: Duration| d + d.mul_f64(0.1 * unit);
        match verdict {
            Verdict::Success => {
                self.failures = 0;
                (jitter(interval), AccountState::Ok)
            }
            Verdict::Continue => {
                self.failures = 0;
                (Duration::ZERO, AccountState::Ok)
            }
            Verdict::Failed { class, retry_after } => {
                self.failures = self.failures.saturating_add(1);
                let state = match class {
                    ErrorClass::Auth => AccountState::Parked,
                    ErrorClass::Config => AccountState::Failing,
                    _ => AccountState::BackingOff,
                };
                // A server's own number is honoured as given, never shortened or stretched,
                // unless the account's interval is longer anyway.
                if let Some(wait) = retry_after
                    && wait >= interval
                {
                    return (wait, state);
                }
                let doubled = interval.saturating_mul(1 << (self.failures - 1).min(16));
                let capped = doubled.min(BACKOFF_CAP.max(interval));
                (jitter(capped), state)
            }
        }
    }
}

/// What [`drive`] schedules.
/// The futures need not be `Send`: [`drive`] polls all accounts on the caller's task.
pub trait Runner: Sync {
    /// Runs account `i` once.
    fn run(&self, i: usize) -> impl Future<Output = Verdict>;
    /// Account `i` runs next after `pause`, in `state`.
    fn scheduled(
        &self,
        i: usize,
        state: AccountState,
        failures: u32,
        pause: Duration,
    ) -> impl Future<Output = ()>;
    /// A random number in `[0, 1)` for jitter.
    fn unit(&self) -> f64;
    /// Waits `pause` (tokio's timer; a simulation moves its own clock instead).
    fn sleep(&self, pause: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(pause)
    }
    /// Resolves when account `i` is asked to run at once (`mailferry run-now`, a new
    /// sign-in): its backoff is reset and it runs. Never, by default.
    fn woken(&self, i: usize) -> impl Future<Output = ()> {
        let _ = i;
        std::future::pending()
    }
}

/// One account for [`drive`].
#[derive(Debug, Clone)]
pub struct Slot {
    /// Its interval (already at least the floor).
    pub interval: Duration,
    /// Pause before its first run.
    pub first: Duration,
    /// Failures in a row so far (from the stored state).
    pub failures: u32,
}

/// Runs every slot on its own schedule until `cancel` fires. A run in progress is not
/// interrupted here; the runner watches `cancel` between messages.
pub async fn drive<R: Runner>(slots: &[Slot], runner: &R, cancel: &CancellationToken) {
    let tasks = slots.iter().enumerate().map(|(i, slot)| async move {
        let mut pacer = Pacer::with_failures(slot.failures);
        let mut pause = slot.first;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = runner.sleep(pause) => {}
                () = runner.woken(i) => {
                    // Asked to run now: whatever made it back off was fixed, says the user.
                    pacer = Pacer::default();
                }
            }
            let verdict = runner.run(i).await;
            if cancel.is_cancelled() {
                return;
            }
            let (next, state) = pacer.next(slot.interval, verdict, runner.unit());
            runner.scheduled(i, state, pacer.failures, next).await;
            pause = next;
        }
    });
    futures_util::future::join_all(tasks).await;
}

/// A random number in `[0, 1)` for jitter, so that accounts do not fire together. From a
/// randomly seeded generator, not the clock (whose low digits are zero on microsecond
/// clocks and equal for calls at the same moment).
#[must_use]
pub fn random_unit() -> f64 {
    fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::time::Instant;

    const MIN: Duration = Duration::from_secs(600);

    #[test]
    fn success_waits_the_interval_plus_at_most_a_tenth() {
        let mut p = Pacer::default();
        assert_eq!(p.next(MIN, Verdict::Success, 0.0).0, MIN);
        let (d, s) = p.next(MIN, Verdict::Success, 0.999);
        assert!(d > MIN && d < MIN + MIN / 10, "{d:?}");
        assert_eq!(s, AccountState::Ok);
    }

    #[test]
    fn a_run_that_ended_at_its_slice_continues_at_once_and_clears_failures() {
        let mut p = Pacer::with_failures(3);
        let (pause, state) = p.next(MIN, Verdict::Continue, 0.9);
        assert_eq!(
            (pause, state, p.failures),
            (Duration::ZERO, AccountState::Ok, 0)
        );
    }

    #[test]
    fn failures_back_off_exponentially_from_the_interval_to_the_cap() {
        let mut p = Pacer::default();
        let fail = Verdict::Failed {
            class: ErrorClass::Transient,
            retry_after: None,
        };
        let waits: Vec<Duration> = (0..8).map(|_| p.next(MIN, fail, 0.0).0).collect();
        assert_eq!(
            waits[0], MIN,
            "the first retry is not sooner than the interval"
        );
        assert_eq!(waits[1], MIN * 2);
        assert_eq!(waits[2], MIN * 4);
        assert_eq!(waits[4], MIN * 16);
        assert_eq!(waits[7], BACKOFF_CAP);
        assert_eq!(p.failures, 8);
        assert_eq!(p.next(MIN, Verdict::Success, 0.0), (MIN, AccountState::Ok));
        assert_eq!(p.failures, 0);
    }

    #[test]
    fn a_servers_requested_pause_is_honoured_exactly() {
        let mut p = Pacer::default();
        let throttled = Verdict::Failed {
            class: ErrorClass::Transient,
            retry_after: Some(Duration::from_millis(1_854_340)),
        };
        assert_eq!(
            p.next(MIN, throttled, 0.7),
            (Duration::from_millis(1_854_340), AccountState::BackingOff)
        );
        // Shorter than the interval: the interval wins (never more often than it).
        let short = Verdict::Failed {
            class: ErrorClass::Transient,
            retry_after: Some(Duration::from_secs(30)),
        };
        assert!(p.next(MIN, short, 0.0).0 >= MIN);
    }

    #[test]
    fn auth_and_config_failures_park() {
        let mut p = Pacer::default();
        let auth = Verdict::Failed {
            class: ErrorClass::Auth,
            retry_after: None,
        };
        assert_eq!(p.next(MIN, auth, 0.0).1, AccountState::Parked);
        let config = Verdict::Failed {
            class: ErrorClass::Config,
            retry_after: None,
        };
        assert_eq!(p.next(MIN, config, 0.0).1, AccountState::Failing);
    }

    /// Records when each account ran; account 1 always fails, account 2 takes 25 minutes.
    struct Fake {
        start: Instant,
        runs: Mutex<Vec<(usize, Duration)>>,
    }

    impl Runner for Fake {
        async fn run(&self, i: usize) -> Verdict {
            self.runs
                .lock()
                .expect("lock")
                .push((i, self.start.elapsed()));
            match i {
                1 => Verdict::Failed {
                    class: ErrorClass::Transient,
                    retry_after: None,
                },
                2 => {
                    tokio::time::sleep(Duration::from_secs(25 * 60)).await;
                    Verdict::Success
                }
                _ => Verdict::Success,
            }
        }

        async fn scheduled(&self, _: usize, _: AccountState, _: u32, _: Duration) {}

        fn unit(&self) -> f64 {
            0.5
        }
    }

    #[tokio::test(start_paused = true)]
    async fn accounts_run_on_their_own_schedules_and_never_wait_for_each_other() {
        let fake = Fake {
            start: Instant::now(),
            runs: Mutex::new(Vec::new()),
        };
        let slots = vec![
            Slot {
                interval: MIN,
                first: Duration::ZERO,
                failures: 0,
            };
            3
        ];
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
            stop.cancel();
        });
        drive(&slots, &fake, &cancel).await;
        let runs = fake.runs.lock().expect("lock").clone();
        let times = |i| -> Vec<u64> {
            runs.iter()
                .filter(|(a, _)| *a == i)
                .map(|(_, t)| t.as_secs())
                .collect()
        };
        // Healthy: every 10 min + 5% jitter (unit 0.5 -> 30 s).
        assert_eq!(times(0)[..4], [0, 630, 1260, 1890]);
        // Failing: 10, 20, 40 min (+5%) between tries, never sooner than the interval.
        assert_eq!(times(1)[..4], [0, 630, 1890, 4410]);
        // Slow: the next run starts an interval after the previous one ended.
        assert_eq!(times(2)[..3], [0, 1500 + 630, 2 * (1500 + 630)]);
        // Nobody waited for the slow one: account 0 ran 12 times in 2 hours.
        assert_eq!(times(0).len(), 12);
    }
}
