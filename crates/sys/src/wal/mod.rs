//! A VFS over SQLite's default one that hands the frames of a transaction to the WAL file
//! in one write.
//!
//! SQLite appends each frame of a commit with two writes, its 24-byte header and its page:
//! a message's ledger transaction (five frames) was ten `pwrite` calls, each a pass through
//! the file system for 24 or 4,096 bytes. Through this VFS the frames a connection appends
//! are gathered in memory and written together when the commit frame's page arrives: the
//! frame whose header holds the database size, which only a commit frame has ("WAL Frame
//! Format", https://sqlite.org/fileformat2.html#walformat).
//!
//! Nothing may be visible before it is written. SQLite makes a commit visible by writing
//! the WAL index header in shared memory, after an `xShmBarrier` on the database file
//! (`walIndexWriteHdr`). A WAL file, when it opens, finds its connection's database file
//! (`sqlite3_database_file_object`, which SQLite offers for VFS shims), and every barrier,
//! lock, map and unmap of that file's shared memory writes what the WAL file still holds
//! first. In the usual path it holds nothing by then (the commit page
//! wrote it, and a failure was that write's error, so the transaction failed); if writing
//! it at a barrier fails, which cannot return an error, the process aborts before the
//! commit becomes visible (a crash, which the ledger survives; a commit visible without its
//! frames would not be). A read, sync, truncation or size of the WAL file, a file control
//! and a write anywhere but after the gathered bytes write them first too. A WAL file
//! without its database file among this VFS's (or no longer) is written through.
//!
//! The connection using this VFS must be used by one thread at a time
//! (`SQLITE_OPEN_NOMUTEX` behind a mutex, as the ledger's): a file's gathered bytes are
//! its connection's own.

// Every function here is a foreign function SQLite calls, or calls into SQLite.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use libsqlite3_sys as ffi;

use methods::METHODS;

mod methods;

/// The VFS's name, for `Connection::open_with_flags_and_vfs`.
pub const NAME: &str = "mailferry-wal";

const C_NAME: &CStr = c"mailferry-wal";

/// A WAL frame header's size; bytes 4 to 8 of it are the database size after a commit,
/// zero in every other frame.
const FRAME_HEADER: usize = 24;
const FRAME_HEADER_LEN: i64 = FRAME_HEADER as i64;

/// Gathered bytes are written once they reach this (a transaction that spills its cache).
const MAX_GATHERED: usize = 256 * 1024;

/// The most one write of the default VFS takes: the unix VFS keeps only the low 17 bits of
/// a write's length (`seekAndWriteFd`), its callers never passing more than a page.
const MAX_WRITE: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Database,
    Wal,
    Other,
}

/// What SQLite allocates for a file of this VFS: this, then the default VFS's file.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    /// The default VFS's file, in the same allocation after this struct.
    real: *mut ffi::sqlite3_file,
    kind: Kind,
    /// A database file's WAL file, a WAL file's database file: set when the WAL file
    /// opens, cleared when either closes.
    peer: *mut File,
    /// WAL files: bytes written by SQLite and not yet by the default VFS, which go at
    /// offset `at`.
    gathered: Vec<u8>,
    at: i64,
    /// Where the page of the commit frame whose header was just written goes.
    commit_page_at: Option<i64>,
}

/// Where the default VFS's file begins, after ours (SQLite aligns the allocation to 8).
const REAL_AT: usize = std::mem::size_of::<File>().next_multiple_of(8);

impl File {
    fn gathers(&self) -> bool {
        self.kind == Kind::Wal && !self.peer.is_null()
    }

    fn real_methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: `real` was opened by the default VFS in `open` and stays open until
        // `close`, so its methods pointer is set and static.
        unsafe { &*(*self.real).pMethods }
    }

    /// Writes what is gathered.
    fn write_gathered(&mut self) -> c_int {
        if self.gathered.is_empty() {
            return ffi::SQLITE_OK;
        }
        let Some(write) = self.real_methods().xWrite else {
            self.gathered.clear();
            return ffi::SQLITE_IOERR_WRITE;
        };
        let mut rc = ffi::SQLITE_OK;
        let mut at = self.at;
        for chunk in self.gathered.chunks(MAX_WRITE) {
            let (Ok(len), Ok(step)) = (c_int::try_from(chunk.len()), i64::try_from(chunk.len()))
            else {
                rc = ffi::SQLITE_IOERR_WRITE;
                break;
            };
            // SAFETY: the chunk holds `len` bytes; `real` is open.
            rc = unsafe { write(self.real, chunk.as_ptr().cast(), len, at) };
            if rc != ffi::SQLITE_OK {
                break;
            }
            at += step;
        }
        self.gathered.clear();
        rc
    }

    /// A WAL file's write, while it knows its database file.
    fn write(&mut self, bytes: &[u8], offset: i64) -> c_int {
        let end = self
            .at
            .saturating_add(i64::try_from(self.gathered.len()).unwrap_or(i64::MAX));
        if !self.gathered.is_empty() && offset != end {
            let rc = self.write_gathered();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let commit_page = self.commit_page_at.take() == Some(offset);
        if bytes.len() == FRAME_HEADER && bytes[4..8] != [0; 4] {
            self.commit_page_at = offset.checked_add(FRAME_HEADER_LEN);
            if self.gathered.is_empty() {
                // A commit frame on its own: a transaction of one frame, or its header
                // checksummed again after frames were rewritten in place
                // (`walRewriteChecksums`), which no page follows.
                return self.write_through(bytes, offset);
            }
        }
        if self.gathered.is_empty() {
            self.at = offset;
        }
        self.gathered.extend_from_slice(bytes);
        if commit_page || self.gathered.len() >= MAX_GATHERED {
            return self.write_gathered();
        }
        ffi::SQLITE_OK
    }

    /// Writes `bytes` at `offset` now.
    fn write_through(&self, bytes: &[u8], offset: i64) -> c_int {
        let (Some(write), Ok(len)) = (self.real_methods().xWrite, c_int::try_from(bytes.len()))
        else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        // SAFETY: `bytes` holds `len` bytes; `real` is open.
        unsafe { write(self.real, bytes.as_ptr().cast(), len, offset) }
    }

    /// A database file's peer writes what it gathered. Returns its error.
    fn write_peer(&mut self) -> c_int {
        if self.peer.is_null() {
            return ffi::SQLITE_OK;
        }
        // SAFETY: a peer is open while set (each one's close clears both), and it
        // belongs to the same connection, which one thread uses at a time.
        unsafe { (*self.peer).write_gathered() }
    }
}

/// The file behind SQLite's pointer.
///
/// # Safety
/// `f` was opened by [`open`] and not closed.
unsafe fn file<'a>(f: *mut ffi::sqlite3_file) -> &'a mut File {
    // SAFETY: the caller's contract; `base` is the first field of the `repr(C)` File.
    unsafe { &mut *f.cast::<File>() }
}

static REGISTERED: OnceLock<Result<(), c_int>> = OnceLock::new();

static WRITTEN_AT_BARRIER: AtomicU64 = AtomicU64::new(0);

/// How many times a barrier found frames still gathered, in this process. None in every
/// path SQLite takes: a commit frame's page writes what is gathered, and a commit frame
/// written on its own is written through. Tests bound it: frames written at the barrier
/// are frames whose write error could not be reported.
#[must_use]
pub fn written_at_barrier() -> u64 {
    WRITTEN_AT_BARRIER.load(Ordering::Relaxed)
}

/// The bytes SQLite holds in this process, every connection's caches and statements
/// included (`sqlite3_memory_used`), for tests that bound them.
#[must_use]
pub fn sqlite_memory_used() -> i64 {
    // SAFETY: sqlite3_memory_used only reads a counter of the library.
    unsafe { ffi::sqlite3_memory_used() }
}

/// Registers the VFS (once; not as the default). Returns SQLite's error code if it could
/// not.
///
/// # Errors
/// SQLite's result code.
pub fn register() -> Result<&'static str, c_int> {
    let done = REGISTERED.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find initialises the library and returns a VFS that lives
        // as long as the process, or null.
        let real = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
        if real.is_null() {
            return Err(ffi::SQLITE_ERROR);
        }
        // SAFETY: `real` is a registered VFS, never freed.
        let r = unsafe { &*real };
        let Ok(real_size) = usize::try_from(r.szOsFile) else {
            return Err(ffi::SQLITE_ERROR);
        };
        let Ok(size) = c_int::try_from(REAL_AT + real_size) else {
            return Err(ffi::SQLITE_ERROR);
        };
        let vfs = Box::new(ffi::sqlite3_vfs {
            iVersion: 2,
            szOsFile: size,
            mxPathname: r.mxPathname,
            pNext: ptr::null_mut(),
            zName: C_NAME.as_ptr(),
            pAppData: real.cast(),
            xOpen: Some(open),
            // The rest are the default VFS's own. They are handed this VFS object, not
            // theirs, which the unix VFS's never read (each marks it unused; xOpen keeps it
            // in the file, hence `open`); the fields they could read are copied above.
            xDelete: r.xDelete,
            xAccess: r.xAccess,
            xFullPathname: r.xFullPathname,
            xDlOpen: r.xDlOpen,
            xDlError: r.xDlError,
            xDlSym: r.xDlSym,
            xDlClose: r.xDlClose,
            xRandomness: r.xRandomness,
            xSleep: r.xSleep,
            xCurrentTime: r.xCurrentTime,
            xGetLastError: r.xGetLastError,
            xCurrentTimeInt64: r.xCurrentTimeInt64,
            xSetSystemCall: None,
            xGetSystemCall: None,
            xNextSystemCall: None,
        });
        // SAFETY: the VFS is leaked, so it outlives its registration (for good); its
        // name is static.
        let rc = unsafe { ffi::sqlite3_vfs_register(Box::into_raw(vfs), 0) };
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(rc)
        }
    });
    done.map(|()| NAME)
}

fn real_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: SQLite passes the registered VFS, whose pAppData is the default VFS.
    unsafe { (*vfs).pAppData.cast() }
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    f: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real_vfs = real_vfs(vfs);
    // SAFETY: SQLite allocated `szOsFile` bytes at `f`, so the default VFS's file fits
    // after ours.
    let real = unsafe { f.cast::<u8>().add(REAL_AT).cast::<ffi::sqlite3_file>() };
    // SAFETY: the default VFS's xOpen, with SQLite's arguments and room for its file.
    let rc = unsafe {
        match (*real_vfs).xOpen {
            Some(xopen) => xopen(real_vfs, name, real, flags, out_flags),
            None => ffi::SQLITE_CANTOPEN,
        }
    };
    // SAFETY: `f` is at least a sqlite3_file; ours is not open unless this sets methods.
    unsafe { (*f).pMethods = ptr::null() };
    if rc != ffi::SQLITE_OK {
        // A file the default VFS left with methods must be closed (SQLite would not).
        // SAFETY: the default VFS's file, closed through its own methods.
        unsafe {
            if let Some(close) = (*real).pMethods.as_ref().and_then(|m| m.xClose) {
                close(real);
            }
        }
        return rc;
    }
    let kind = if flags & ffi::SQLITE_OPEN_WAL != 0 {
        Kind::Wal
    } else if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
        Kind::Database
    } else {
        Kind::Other
    };
    // SAFETY: `f` has room for a File (szOsFile); nothing there needs dropping.
    unsafe {
        ptr::write(
            f.cast::<File>(),
            File {
                base: ffi::sqlite3_file {
                    pMethods: &raw const METHODS,
                },
                real,
                kind,
                peer: ptr::null_mut(),
                gathered: Vec::new(),
                at: 0,
                commit_page_at: None,
            },
        );
    }
    if kind == Kind::Wal {
        // SAFETY: SQLite passes a WAL file's name as its pager made it, which leads to the
        // pager's database file (sqlite3_database_file_object, "intended for use in custom
        // VFS implementations"); that is one of ours when its methods are, and then `open`
        // initialised it. Both files are the same connection's.
        unsafe {
            let db = ffi::sqlite3_database_file_object(name);
            if !db.is_null() && ptr::eq((*db).pMethods, &raw const METHODS) {
                let db = file(db);
                if db.kind == Kind::Database {
                    db.peer = f.cast();
                    file(f).peer = db;
                }
            }
        }
    }
    ffi::SQLITE_OK
}
