//! `cargo bench -p mailferry-sys --bench populate`: the CPU (user and system) a large
//! message's buffer costs a MB, allocated, written whole and freed, from the system
//! allocator (a page fault a page) and from [`Populating`] (one `madvise`), alternating.

use std::alloc::{GlobalAlloc, Layout, System};

use mailferry_sys::populate::Populating;

const SIZE: usize = 3 * 1024 * 1024;
const ROUNDS: usize = 300;

/// CPU time of the process so far, in seconds.
#[allow(unsafe_code)]
fn cpu() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Microseconds of CPU a MB.
#[allow(unsafe_code)]
fn pass(allocator: &dyn GlobalAlloc, message: &[u8]) -> f64 {
    let layout = Layout::from_size_align(message.len(), 1).expect("layout");
    let start = cpu();
    for _ in 0..ROUNDS {
        // SAFETY: a non-zero layout; the block is written within its size and freed with
        // the same layout by the same allocator.
        unsafe {
            let p = allocator.alloc(layout);
            assert!(!p.is_null());
            std::ptr::copy_nonoverlapping(message.as_ptr(), p, message.len());
            std::hint::black_box(p);
            allocator.dealloc(p, layout);
        }
    }
    (cpu() - start) * 1e6 / (ROUNDS * message.len()) as f64 * (1024.0 * 1024.0)
}

fn main() {
    mailferry_sys::tune();
    let message = vec![b'x'; SIZE];
    for round in 1..=3 {
        let system = pass(&System, &message);
        let populating = pass(&Populating, &message);
        println!(
            "round {round}: a 3 MiB buffer, written whole: system {system:.0} us of CPU a MB, populating {populating:.0}"
        );
    }
}
