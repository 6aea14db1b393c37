//! The system allocator, handing out large blocks with their pages already in place.
//!
//! A block of [`POPULATE_FROM`] bytes or more is a large message's buffer (an IMAP
//! literal, a POP3 reply reserved at its `LIST` size): glibc maps it afresh (see
//! [`crate::MMAP_THRESHOLD`]) and it is written from end to end at once. Left to itself,
//! the kernel provides each 4 KiB page at its first write, one page fault each: about 750
//! for a 3 MB message, each a trap into the kernel, which on a virtual machine costs more
//! than the page's zeroing. [`Populating`] asks for the whole block's pages in one
//! `madvise(MADV_POPULATE_WRITE)` instead (Linux 5.14; a kernel without it says `EINVAL`
//! and the pages come at their first write, as before). The memory is the same: these
//! blocks are filled whole, so their pages would be resident a moment later anyway.
//!
//! Only what is written in Rust goes through it; SQLite has its own allocations.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large get their pages at once (glibc's mmap threshold as
/// [`crate::tune`] sets it: smaller blocks mostly reuse pages of the heap).
pub const POPULATE_FROM: usize = crate::MMAP_THRESHOLD;

/// [`System`], with the pages of large blocks provided at once (see the module).
pub struct Populating;

/// The size of a page, assumed where the system does not say.
const PAGE: usize = 4096;

/// Provides the pages that lie wholly within `len` bytes from `ptr`, writable, in one
/// call. The partial pages at either end are left to their first write: they may hold
/// other blocks. Returns whether the kernel did it.
#[allow(unsafe_code)]
fn populate(ptr: *mut u8, len: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        let page = page_size();
        let addr = ptr as usize;
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        let start = addr.div_ceil(page) * page;
        let end = end / page * page;
        if end <= start {
            return false;
        }
        // SAFETY: [start, end) lies within a block the allocator just handed out (or
        // grew), so it is mapped, private and writable. MADV_POPULATE_WRITE only
        // provides page-table entries as a write would, without writing: the block's
        // bytes are unchanged, and no other memory is touched.
        let done = unsafe { libc::madvise(start as *mut libc::c_void, end - start, MADV) };
        done == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (ptr, len);
        false
    }
}

#[cfg(target_os = "linux")]
const MADV: libc::c_int = libc::MADV_POPULATE_WRITE;

/// The system's page size, read once.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn page_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        // SAFETY: sysconf only reads a system setting.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|s| s.is_power_of_two())
            .unwrap_or(PAGE)
    })
}

// SAFETY: every block comes from System with the caller's layout, and is given back to
// System with it; between the two, only `populate` touches it, which does not change its
// bytes. A realloc that moves a block does what System's would: a new block of the new
// size and alignment, the old bytes copied, the old block freed.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Populating {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for alloc, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && layout.size() >= POPULATE_FROM {
            populate(p, layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // A zeroed block may be used sparsely (that is what calloc's untouched pages are
        // for): its pages come as they are written.
        // SAFETY: the caller's contract for alloc_zeroed, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for dealloc, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        // A block that doubles is a buffer growing as it goes (Vec's and BytesMut's
        // amortised growth): most of the new half may never be written (async-imap's
        // buffer doubles for the few bytes after a literal), so its pages come as they
        // are written. So do those a large block grows by: glibc moves its pages rather
        // than copying them (mremap), and what it grows for is not known.
        if new_size < POPULATE_FROM
            || new_size <= old
            || Some(new_size) == old.checked_mul(2)
            || old >= POPULATE_FROM
        {
            // SAFETY: the caller's contract for realloc, passed on.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // From small to large: glibc would copy the bytes into a fresh mapping and fault
        // its pages one by one as it copies. A populated block, the bytes copied, the old
        // block freed. The caller guarantees `new_size`, rounded up to the alignment, does
        // not overflow isize, so the layout is valid.
        let Ok(grown) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `grown` has a non-zero size (at least POPULATE_FROM).
        let p = unsafe { self.alloc(grown) };
        if !p.is_null() {
            // SAFETY: both blocks are valid for `old` bytes (old < new_size) and distinct;
            // `ptr` was allocated with `layout`, as the caller guarantees.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, p, old);
                System.dealloc(ptr, layout);
            }
        }
        p
    }
}

/// Whether every page wholly within `len` bytes from `ptr` is resident (`mincore`), for
/// tests. `None` where it cannot be told.
#[must_use]
#[allow(unsafe_code)]
pub fn resident(ptr: *const u8, len: usize) -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        let page = page_size();
        let addr = ptr as usize;
        let start = addr.div_ceil(page) * page;
        let end = addr.checked_add(len)? / page * page;
        if end <= start {
            return None;
        }
        let mut pages = vec![0u8; (end - start) / page];
        // SAFETY: mincore reads the page tables of [start, end), which lies within the
        // caller's block, and writes one byte a page into `pages`, which has that many.
        let done = unsafe {
            libc::mincore(
                start as *mut libc::c_void,
                end - start,
                pages.as_mut_ptr().cast(),
            )
        };
        (done == 0).then(|| pages.iter().all(|p| p & 1 == 1))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (ptr, len);
        None
    }
}
