//! The system calls std does not wrap, each behind a safe function: glibc's allocator
//! thresholds ([`tune`]), a large block's pages at once ([`populate`]) and a socket's
//! receive low-water mark ([`set_recv_lowat`]); and
//! the one foreign interface mailferry implements, an SQLite VFS (feature `wal`).
//!
//! [`tune`] fixes glibc's mmap threshold, so that memory of a large message goes back to
//! the system once the message is delivered. glibc serves allocations of 128 KiB or more
//! with their own mapping and unmaps them on free, but after the first such free it raises
//! that threshold to the freed size (up to 32 MiB), and with it the heap's trim threshold to
//! twice that. From then on every buffer of that size comes from the heap and stays
//! resident after use: one 5 MB message and the service holds about 10 MB more for good (a
//! 25 MB one: up to 64 MB). Setting the threshold turns that adjustment off (mallopt(3)):
//! allocations of 1 MiB or more are mapped and unmapped, smaller ones (most mail) are
//! reused from the heap. `scripts/bench`, 3,000 messages of 1 KB-5 MB: peak RSS 22-27 MB
//! -> 19-23 MB.
//!
//! Fixing it leaves the trim threshold at its default, 128 KiB: the free memory at the top
//! of the heap is given back whenever it exceeds that, so a message of a few hundred KB
//! delivered there was given back and faulted in again, page by page, for the next. It is
//! [`TRIM_THRESHOLD`] instead: the heap keeps up to that much free at its top for the next
//! message (DECISIONS.md has the measurements).
//!
//! [`populate::Populating`], the service's allocator, gives a block of 1 MiB or more (a
//! large message's buffer) its pages in one call instead of a page fault each.
//!
//! With the feature `wal`, [`wal`] is the SQLite VFS of the ledger's connection: it hands
//! the frames of a transaction to the WAL file in one write instead of two per frame.
//!
//! With the feature `counting`, [`counting::Counting`] is an allocator that keeps the
//! peak of the bytes in use, for tests that bound a step's memory.
//!
//! This is the one crate with unsafe code; the workspace forbids it elsewhere.

/// Allocations at least this large are mapped on their own and unmapped when freed.
pub const MMAP_THRESHOLD: usize = 1024 * 1024;

/// Free memory at the top of the heap is given back to the system only beyond this.
pub const TRIM_THRESHOLD: usize = 2 * 1024 * 1024;

/// Applies [`MMAP_THRESHOLD`] and [`TRIM_THRESHOLD`]. Call once, first thing in `main`,
/// before other threads start. Does nothing where the C library is not glibc. Returns
/// whether both took effect.
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |parameter: libc::c_int, value: usize| {
            let Ok(value) = libc::c_int::try_from(value) else {
                return false;
            };
            // SAFETY: mallopt only changes a parameter of the allocator, and is safe to
            // call at any time; it returns 0 when it does not take the value.
            #[allow(unsafe_code)]
            let done = unsafe { libc::mallopt(parameter, value) };
            done == 1
        };
        set(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) & set(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

pub mod populate;

#[cfg(feature = "wal")]
pub mod wal;

#[cfg(feature = "counting")]
pub mod counting {
    //! The system allocator, counting: tests install it with `#[global_allocator]` and
    //! read how many bytes were in use at most while a step ran, and how many allocations
    //! it made, in every thread.

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static IN_USE: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

    /// [`System`], keeping the bytes in use and their peak.
    pub struct Counting;

    impl Counting {
        /// Starts a new peak at what is in use now; returns that.
        pub fn reset_peak() -> usize {
            let now = IN_USE.load(Ordering::SeqCst);
            PEAK.store(now, Ordering::SeqCst);
            now
        }

        /// The most bytes in use since [`Self::reset_peak`].
        pub fn peak() -> usize {
            PEAK.load(Ordering::SeqCst)
        }

        /// Allocations so far (a `realloc` counts as one).
        pub fn allocations() -> usize {
            ALLOCATIONS.load(Ordering::SeqCst)
        }

        fn grew(by: usize) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
            let now = IN_USE.fetch_add(by, Ordering::SeqCst) + by;
            PEAK.fetch_max(now, Ordering::SeqCst);
        }

        fn shrank(by: usize) {
            IN_USE.fetch_sub(by, Ordering::SeqCst);
        }
    }

    // SAFETY: every call goes to System with the caller's arguments unchanged, so System's
    // guarantees hold; the counting only reads sizes.
    #[allow(unsafe_code)]
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract for alloc, passed on.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                Self::grew(layout.size());
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract for alloc_zeroed, passed on.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                Self::grew(layout.size());
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract for dealloc, passed on.
            unsafe { System.dealloc(ptr, layout) };
            Self::shrank(layout.size());
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the caller's contract for realloc, passed on.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                Self::shrank(layout.size());
                Self::grew(new_size);
            }
            p
        }
    }
}

/// Sets the receive low-water mark of the socket `fd` (`SO_RCVLOWAT`, socket(7)): the
/// reader is not woken, by epoll or a blocking read, before that many bytes are queued.
/// Linux caps it at half the socket's largest receive buffer.
///
/// # Errors
/// The system call's error (`EBADF`, `ENOTSOCK`, ...).
#[cfg(target_os = "linux")]
pub fn set_recv_lowat(fd: std::os::fd::BorrowedFd<'_>, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let Ok(len) = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()) else {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    // SAFETY: the pointer and length describe `value`, which outlives the call, and the
    // kernel only reads it; the descriptor is borrowed, so it is open.
    #[allow(unsafe_code)]
    let done = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const value).cast(),
            len,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads what the socket `fd` holds now into `buf`, without waiting (`recv(2)` with
/// `MSG_DONTWAIT`), whatever its low-water mark: `WouldBlock` when it holds nothing.
///
/// # Errors
/// The system call's.
#[cfg(target_os = "linux")]
pub fn recv_now(fd: std::os::fd::BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: the pointer and length describe `buf`, which the kernel writes at most up to
    // its length; the descriptor is borrowed, so it is open.
    #[allow(unsafe_code)]
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
}

/// Elsewhere the mark is left as it is.
///
/// # Errors
/// Never.
/// Elsewhere nothing is read this way: the socket is left to the runtime.
///
/// # Errors
/// Always `WouldBlock`.
#[cfg(not(target_os = "linux"))]
pub fn recv_now(_fd: std::os::fd::BorrowedFd<'_>, _buf: &mut [u8]) -> std::io::Result<usize> {
    Err(std::io::ErrorKind::WouldBlock.into())
}

#[cfg(not(target_os = "linux"))]
pub fn set_recv_lowat(_fd: std::os::fd::BorrowedFd<'_>, _bytes: usize) -> std::io::Result<()> {
    Ok(())
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

    #[cfg(target_os = "linux")]
    #[test]
    fn a_read_waits_for_the_low_water_mark() {
        use std::io::{Read as _, Write as _};
        use std::os::fd::AsFd as _;
        use std::time::{Duration, Instant};

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut sender =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut receiver, _) = listener.accept().expect("accept");
        receiver
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut buf = [0u8; 64];

        // Ten bytes queued, a mark of 1,000: the read waits out its timeout, then takes them.
        super::set_recv_lowat(receiver.as_fd(), 1000).expect("SO_RCVLOWAT");
        sender.write_all(b"0123456789").expect("write");
        let started = Instant::now();
        assert_eq!(receiver.read(&mut buf).expect("read"), 10);
        assert!(started.elapsed() >= Duration::from_millis(250));

        // The default mark: at once.
        super::set_recv_lowat(receiver.as_fd(), 1).expect("SO_RCVLOWAT");
        sender.write_all(b"abc").expect("write");
        let started = Instant::now();
        assert_eq!(receiver.read(&mut buf).expect("read"), 3);
        assert!(started.elapsed() < Duration::from_millis(250));
    }
}
