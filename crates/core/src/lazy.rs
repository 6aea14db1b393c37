//! Whether a source's reads may wait for the run's next wake.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared between a source's socket and the run that fetches from it. The run turns it on
/// while it awaits something else that wakes it soon (a delivery in flight, waiting for the
/// destination's reply). Meanwhile the socket need not wake the run for every few
/// kilobytes that arrive: the reader takes what came at the run's next wake, and the
/// socket wakes it only for much, or after a short wait (`mailferry_tls::Watermarked`).
/// Each wake the run is spared is a sleep and a wake-up of its thread, which virtual
/// machines charge dearly.
#[derive(Debug, Clone, Default)]
pub struct LazyReads(Arc<AtomicBool>);

impl LazyReads {
    /// Turns lazy reads on or off.
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }

    /// Whether reads are lazy now.
    #[must_use]
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
