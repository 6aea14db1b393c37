//! Fixes glibc's mmap threshold, so that memory of a large message goes back to the
//! system once the message is delivered.
//!
//! glibc serves allocations of 128 KiB or more with their own mapping and unmaps them on
//! free, but after the first such free it raises that threshold to the freed size (up to
//! 32 MiB), and with it the heap's trim threshold to twice that. From then on every
//! buffer of that size comes from the heap and stays resident after use: one 5 MB
//! message and the service holds about 10 MB more for good (a 25 MB one: up to 64 MB).
//! Setting the threshold turns that adjustment off (mallopt(3)): allocations of 1 MiB or
//! more are mapped and unmapped, smaller ones (most mail) are reused from the heap.
//!
//! `scripts/bench`, 3,000 messages of 1 KB-5 MB: peak RSS 22-27 MB -> 19-23 MB.
//!
//! This is the one crate with unsafe code (one call); the workspace forbids it elsewhere.

/// Allocations at least this large are mapped on their own and unmapped when freed.
pub const MMAP_THRESHOLD: usize = 1024 * 1024;

/// Applies [`MMAP_THRESHOLD`]. Call once, first thing in `main`, before other threads
/// start. Does nothing where the C library is not glibc. Returns whether it took effect.
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let Ok(threshold) = libc::c_int::try_from(MMAP_THRESHOLD) else {
            return false;
        };
        // SAFETY: mallopt only changes a parameter of the allocator, and is safe to call
        // at any time; it returns 0 when it does not take the value.
        #[allow(unsafe_code)]
        let done = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) };
        done == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_threshold_is_taken() {
        assert_eq!(
            super::tune(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }
}
