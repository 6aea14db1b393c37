//! Large blocks come with their pages in place (`populate`): a 3 MB message's buffer is
//! one `madvise` call rather than about 750 page faults. Its own binary without the test
//! harness, with the allocator the service uses and glibc's thresholds as it sets them.

use std::alloc::{GlobalAlloc, Layout, System};

use mailferry_sys::populate::{POPULATE_FROM, Populating, resident};

#[global_allocator]
static ALLOCATOR: Populating = Populating;

const MIB: usize = 1024 * 1024;

#[cfg(target_os = "linux")]
fn main() {
    mailferry_sys::tune();
    a_large_buffer_is_resident_before_a_byte_is_written();
    the_system_allocator_alone_leaves_it_to_the_first_writes();
    a_buffer_grown_to_a_messages_size_is_resident_and_keeps_its_bytes();
    the_new_half_of_a_doubling_buffer_comes_as_it_is_written();
    a_zeroed_block_comes_as_it_is_written();
}

/// What a POP3 reply reserved at its LIST size gets.
fn a_large_buffer_is_resident_before_a_byte_is_written() {
    let buffer: Vec<u8> = Vec::with_capacity(3 * MIB);
    assert_eq!(
        resident(buffer.as_ptr(), buffer.capacity()),
        Some(true),
        "a 3 MiB buffer's pages are in place before it is written"
    );
}

/// The control: the same block from the system allocator is not, so the check above
/// tells the two apart (as it does the code before `Populating`).
fn the_system_allocator_alone_leaves_it_to_the_first_writes() {
    let layout = Layout::from_size_align(3 * MIB, 1).expect("layout");
    // SAFETY: a non-zero layout; the block is freed below with it.
    #[allow(unsafe_code)]
    let p = unsafe { System.alloc(layout) };
    assert!(!p.is_null());
    assert_eq!(
        resident(p, layout.size()),
        Some(false),
        "a fresh 3 MiB mapping from the system has no pages yet"
    );
    // SAFETY: allocated above with `layout`.
    #[allow(unsafe_code)]
    unsafe {
        System.dealloc(p, layout);
    }
}

/// What async-imap's buffer does when a literal's size is known: from a few KB to the
/// whole response at once.
fn a_buffer_grown_to_a_messages_size_is_resident_and_keeps_its_bytes() {
    let pattern = |i: usize| u8::try_from(i % 251).expect("below 251");
    let mut buffer: Vec<u8> = (0..8192).map(pattern).collect();
    buffer.shrink_to_fit();
    buffer.reserve_exact(3 * MIB);
    assert!(buffer.capacity() >= POPULATE_FROM);
    assert_eq!(
        resident(buffer.as_ptr(), buffer.capacity()),
        Some(true),
        "the grown buffer's pages are in place"
    );
    assert!(
        buffer.iter().enumerate().all(|(i, &b)| b == pattern(i)),
        "the bytes before the growth are kept"
    );
}

/// Amortised growth doubles a buffer for a few more bytes: the new half is not
/// populated, or every large buffer would cost twice its size in memory.
fn the_new_half_of_a_doubling_buffer_comes_as_it_is_written() {
    let mut buffer = vec![7u8; 2 * MIB];
    buffer.push(8);
    assert_eq!(buffer.capacity(), 4 * MIB, "Vec doubles");
    let half = buffer.as_ptr().wrapping_add(2 * MIB + 4096);
    assert_eq!(
        resident(half, MIB),
        Some(false),
        "the new half has no pages before it is written"
    );
    assert_eq!(buffer[2 * MIB - 1], 7);
    assert_eq!(buffer[2 * MIB], 8);
}

/// A zeroed block may be used sparsely (a table, a bitmap): calloc's untouched pages are
/// the point of it.
fn a_zeroed_block_comes_as_it_is_written() {
    let table = vec![0u64; MIB];
    assert_eq!(
        resident(table.as_ptr().cast(), table.len() * 8),
        Some(false),
        "an 8 MiB zeroed table has no pages before it is written"
    );
}

#[cfg(not(target_os = "linux"))]
fn main() {}
