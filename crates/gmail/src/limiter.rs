//! The pace of requests to one Gmail mailbox, shared by every task of the process that
//! delivers to it, and learned from Gmail's refusals.
//!
//! Requests are spaced evenly at the current rate (a schedule, not a sleep after each
//! request). The rate starts at what the store remembers (else `max-rate`) and follows the
//! quota the user's Cloud project really has: Google gives projects created since May 2026
//! 6,000 units per user per minute (240 imports), older ones 15,000 (600), and says so
//! only by refusing (`429 rateLimitExceeded`, "Quota exceeded for quota metric 'Queries'
//! and limit 'Queries per minute per user'").
//!
//! - A quota refusal sets the rate to what the last minute took (the requests Gmail
//!   accepted in it: exactly the quota when the minute was full), and at most 95% of the
//!   rate before; the other refusals of the same moment (requests already in flight) do
//!   not cut it again. Everything holds back until enough of the minute's requests have
//!   aged out of it for the new rate.
//! - While requests queue for their slots (the rate is what limits), the rate creeps up by
//!   1% every 10 s, up to `max-rate`: a raised quota is found again, and the cost is about
//!   one refusal a minute at the quota's edge (the rate sits between 95% and 100% of it).
//! - `Retry-After` (and Gmail's "Retry after <time>") holds every request back until then.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Gmail's quotas are per minute.
const WINDOW: Duration = Duration::from_secs(60);
/// A rate is raised at most this often, and only if nothing was refused meanwhile.
const RAISE_EVERY: Duration = Duration::from_secs(10);
/// By how much.
const RAISE: f64 = 1.01;
/// A refusal cuts the rate to at most this share of what it was.
const CUT: f64 = 0.95;
/// Accepted requests in the minute before the estimate from them is used.
const MEANINGFUL: usize = 10;
/// The slowest pace mailferry falls to (one request a minute).
const FLOOR: f64 = 1.0 / 60.0;

/// Spaces requests at a rate learned from quota refusals.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// `max-rate`: never faster.
    ceiling: f64,
    /// Requests per second now.
    rate: f64,
    /// The next free slot.
    next: Instant,
    /// When Gmail accepted the requests of the last minute.
    accepted: VecDeque<Instant>,
    /// The last cut.
    cut_at: Option<Instant>,
    /// The last raise (or the start).
    raised_at: Instant,
    /// Whether a request waited for its slot since the last raise.
    queued: bool,
    /// Counts the holds: a request whose slot was given before a hold takes a new one.
    holds: u64,
}

impl RateLimiter {
    /// A limiter at `rate` requests per second, never above `ceiling`.
    #[must_use]
    pub fn new(ceiling: f64, rate: f64) -> Self {
        let ceiling = positive(ceiling, 1.0);
        let now = Instant::now();
        Self {
            state: Mutex::new(State {
                ceiling,
                rate: positive(rate, ceiling).clamp(FLOOR, ceiling),
                next: now,
                accepted: VecDeque::new(),
                cut_at: None,
                raised_at: now,
                queued: false,
                holds: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current rate (requests per second).
    #[must_use]
    pub fn rate(&self) -> f64 {
        self.state().rate
    }

    /// A new `max-rate` (a reload): the rate never exceeds it; a higher one is crept up to.
    pub fn set_ceiling(&self, ceiling: f64) {
        let mut s = self.state();
        s.ceiling = positive(ceiling, s.ceiling);
        s.rate = s.rate.min(s.ceiling);
    }

    /// Waits for this request's slot. A hold that begins meanwhile (a refusal of another
    /// request, a `Retry-After`) moves this request behind it: requests already waiting
    /// are not sent into a quota known to be spent.
    pub async fn acquire(&self) {
        loop {
            let (slot, holds) = self.take_slot();
            tokio::time::sleep_until(slot).await;
            if self.state().holds == holds {
                return;
            }
        }
    }

    fn take_slot(&self) -> (Instant, u64) {
        let mut s = self.state();
        let now = Instant::now();
        if now.duration_since(s.raised_at) >= RAISE_EVERY {
            let calm = s
                .cut_at
                .is_none_or(|at| now.duration_since(at) >= RAISE_EVERY);
            if s.queued && calm {
                s.rate = (s.rate * RAISE).min(s.ceiling);
            }
            s.raised_at = now;
            s.queued = false;
        }
        let slot = s.next.max(now);
        if slot > now {
            s.queued = true;
        }
        s.next = slot + Duration::from_secs_f64(1.0 / s.rate);
        (slot, s.holds)
    }

    /// Gmail accepted a request.
    pub fn accepted(&self) {
        let mut s = self.state();
        let now = Instant::now();
        s.accepted.push_back(now);
        forget_old(&mut s.accepted, now);
    }

    /// Gmail refused a request for the per-minute quota: the rate follows the quota, and
    /// everyone holds back until the minute has room. Returns how long that is.
    pub fn quota_refused(&self) -> Duration {
        let mut s = self.state();
        let now = Instant::now();
        forget_old(&mut s.accepted, now);
        // Requests in flight when the quota ran out come back refused together: one cut.
        let fresh = s
            .cut_at
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(2));
        if fresh {
            // What the minute took says something only once there is some of it: a few
            // requests a moment ago (a refusal at the start, a storm) say nothing.
            let span = s
                .accepted
                .front()
                .map_or(Duration::ZERO, |t| now.duration_since(*t));
            let took = s.accepted.len() as f64 / WINDOW.as_secs_f64();
            let mut rate = s.rate * CUT;
            if s.accepted.len() >= MEANINGFUL && span >= WINDOW / 6 {
                rate = rate.min(took);
            }
            s.rate = rate.clamp(FLOOR, s.ceiling);
            s.cut_at = Some(now);
        }
        // Room again once the minute holds fewer than a minute's worth at the new rate.
        let allowed = per_window(s.rate);
        let wait = match s.accepted.len().checked_sub(allowed.max(1)) {
            Some(i) => s.accepted.get(i).map_or(Duration::ZERO, |t| {
                (*t + WINDOW).saturating_duration_since(now)
            }),
            None => Duration::ZERO,
        }
        .max(Duration::from_secs(1));
        hold(&mut s, now + wait);
        wait
    }

    /// Holds every request back for `wait` from now (the server asked for it).
    pub fn pause(&self, wait: Duration) {
        let mut s = self.state();
        let now = Instant::now();
        hold(&mut s, now + wait);
    }
}

/// Whole requests a minute at `rate`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn per_window(rate: f64) -> usize {
    // The rate is finite and clamped to [FLOOR, ceiling]; the ceiling comes from the
    // configuration (at most a few hundred a second): the cast cannot truncate or wrap.
    (rate * WINDOW.as_secs_f64()).floor().clamp(0.0, 1e9) as usize
}

fn hold(s: &mut State, until: Instant) {
    if s.next < until {
        s.next = until;
        s.holds += 1;
    }
}

fn forget_old(accepted: &mut VecDeque<Instant>, now: Instant) {
    while accepted
        .front()
        .is_some_and(|t| now.duration_since(*t) >= WINDOW)
    {
        accepted.pop_front();
    }
}

fn positive(v: f64, otherwise: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        otherwise
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_at_the_rate_and_pauses_hold_everyone() {
        let l = Arc::new(RateLimiter::new(10.0, 10.0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let l = Arc::clone(&l);
                tokio::spawn(async move {
                    l.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.expect("task") - start);
        }
        times.sort();
        // 20 requests at 10/s: the last starts 1.9 s after the first.
        assert_eq!(times[0], Duration::ZERO);
        assert_eq!(times[19], Duration::from_millis(1900));

        l.pause(Duration::from_secs(5));
        let before = Instant::now();
        l.acquire().await;
        assert!(Instant::now() - before >= Duration::from_secs(5));
    }

    /// A stand-in for Gmail's per-user quota: at most `per_minute` requests accepted in
    /// any 60 s.
    struct Quota {
        per_minute: usize,
        accepted: VecDeque<Instant>,
    }

    impl Quota {
        fn admit(&mut self) -> bool {
            let now = Instant::now();
            forget_old(&mut self.accepted, now);
            if self.accepted.len() < self.per_minute {
                self.accepted.push_back(now);
                true
            } else {
                false
            }
        }
    }

    /// Imports `n` messages one after another against `quota`; (time, refusals).
    async fn import(l: &RateLimiter, quota: &mut Quota, n: usize) -> (Duration, u32) {
        let start = Instant::now();
        let mut refusals = 0;
        let mut done = 0;
        while done < n {
            l.acquire().await;
            if quota.admit() {
                l.accepted();
                done += 1;
            } else {
                refusals += 1;
                l.quota_refused();
            }
        }
        (Instant::now() - start, refusals)
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_projects_quota_is_learned_and_used_to_95_percent_with_few_refusals() {
        // max-rate 10/s against 6,000 units a minute (240 imports): 2,000 messages.
        let l = RateLimiter::new(10.0, 10.0);
        let mut quota = Quota {
            per_minute: 240,
            accepted: VecDeque::new(),
        };
        let (took, refusals) = import(&l, &mut quota, 2_000).await;
        // The quota's floor: 2,000 imports at 240 a minute take 500 s.
        let floor = 500.0;
        let share = floor / took.as_secs_f64();
        assert!(
            share >= 0.95,
            "{took:?} is {:.1}% of the quota",
            share * 100.0
        );
        let minutes = took.as_secs_f64() / 60.0;
        assert!(
            f64::from(refusals) / minutes <= 3.0,
            "{refusals} refusals in {minutes:.1} minutes"
        );
        // Learned: the next run starts at the quota, and is hardly refused.
        let learned = l.rate();
        assert!((3.7..=4.1).contains(&learned), "{learned}");
        let next = RateLimiter::new(10.0, learned);
        tokio::time::sleep(WINDOW).await;
        let (_, refusals) = import(&next, &mut quota, 480).await;
        assert!(refusals <= 2, "{refusals}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_projects_quota_is_used_and_a_raised_quota_is_found_again() {
        let l = RateLimiter::new(10.0, 10.0);
        let mut quota = Quota {
            per_minute: 600,
            accepted: VecDeque::new(),
        };
        // 15,000 units: 10 imports a second, the default max-rate: at the floor (200 s).
        let (took, refusals) = import(&l, &mut quota, 2_000).await;
        assert!(refusals <= 2, "{refusals}");
        assert!(took <= Duration::from_secs(210), "{took:?}");
        l.set_ceiling(20.0);
        // Cut to a low quota, then the quota is raised: the rate creeps back up.
        quota.per_minute = 120;
        import(&l, &mut quota, 600).await;
        let low = l.rate();
        assert!(low <= 2.1, "{low}");
        quota.per_minute = 600;
        import(&l, &mut quota, 3_000).await;
        assert!(l.rate() > low * 1.5, "{} after {low}", l.rate());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_at_the_start_cuts_the_rate_a_little_not_to_a_crawl() {
        // Gmail's storms of 429 come at any time; one right after the first request (a
        // minute holding one accepted request) must not read as "one a minute".
        let l = RateLimiter::new(10.0, 10.0);
        l.acquire().await;
        l.accepted();
        let wait = l.quota_refused();
        assert!(l.rate() >= 9.0, "{}", l.rate());
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
    }

    #[test]
    fn a_new_max_rate_caps_the_learned_one() {
        let l = RateLimiter::new(10.0, 8.0);
        l.set_ceiling(2.0);
        assert!((l.rate() - 2.0).abs() < f64::EPSILON);
        l.set_ceiling(50.0);
        assert!((l.rate() - 2.0).abs() < f64::EPSILON);
        assert!((RateLimiter::new(10.0, 99.0).rate() - 10.0).abs() < f64::EPSILON);
    }
}
