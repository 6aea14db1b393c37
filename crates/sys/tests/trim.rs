//! The heap keeps a delivered message's memory for the next one (see `tune`). Its own
//! binary without the test harness, so that only this thread uses the heap.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() {
    assert!(mailferry_sys::tune(), "both thresholds taken");
    // A message of 600 KB, read and delivered: freed at the top of the heap.
    let message = vec![1u8; 600 * 1024];
    std::hint::black_box(&message);
    drop(message);
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    #[allow(unsafe_code)]
    let kept = unsafe { libc::mallinfo2() }.keepcost;
    // With the default trim threshold (128 KiB) the heap gave it back: 131,760 bytes kept.
    assert!(
        kept >= 600 * 1024,
        "the heap kept {kept} bytes at its top after a 600 KB message"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {}
