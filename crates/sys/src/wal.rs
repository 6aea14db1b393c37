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
//! (`walIndexWriteHdr`). [`pair`] tells a connection's database file which WAL file is
//! its own, and every barrier, lock, map and unmap of the shared memory writes what that
//! WAL file still holds first. In the usual path it holds nothing by then (the commit page
//! wrote it, and a failure was that write's error, so the transaction failed); if writing
//! it at a barrier fails, which cannot return an error, the process aborts before the
//! commit becomes visible (a crash, which the ledger survives; a commit visible without its
//! frames would not be). A read, sync, truncation or size of the WAL file, a file control
//! and a write anywhere but after the gathered bytes write them first too. A WAL file that
//! is not paired (or no longer) is written through as before.
//!
//! The connection using this VFS must be used by one thread at a time
//! (`SQLITE_OPEN_NOMUTEX` behind a mutex, as the ledger's): a file's gathered bytes are
//! its connection's own.

// Every function here is a foreign function SQLite calls, or calls into SQLite.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::ffi;

/// The VFS's name, for `Connection::open_with_flags_and_vfs`.
pub const NAME: &str = "mailferry-wal";

const C_NAME: &CStr = c"mailferry-wal";

/// A WAL frame header's size; bytes 4 to 8 of it are the database size after a commit,
/// zero in every other frame.
const FRAME_HEADER: usize = 24;
const FRAME_HEADER_LEN: i64 = 24;

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
    /// A database file's WAL file, a WAL file's database file: set by [`pair`], cleared
    /// when either is closed.
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

    /// A WAL file's write, while the file is paired.
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
        // SAFETY: a peer is open while paired (each one's close unpairs both), and it
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
            xDelete: Some(delete),
            xAccess: Some(access),
            xFullPathname: Some(full_pathname),
            // Extensions are never loaded; the default VFS's own, as they are.
            xDlOpen: r.xDlOpen,
            xDlError: r.xDlError,
            xDlSym: r.xDlSym,
            xDlClose: r.xDlClose,
            xRandomness: Some(randomness),
            xSleep: Some(sleep),
            xCurrentTime: Some(current_time),
            xGetLastError: Some(last_error),
            xCurrentTimeInt64: Some(current_time_int64),
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

/// Pairs the main database file of `conn` with its WAL file, when both are files of this
/// VFS and the WAL is open (after the connection's first read in WAL mode). Returns
/// whether they are paired; unpaired, the WAL file is written through.
#[must_use]
pub fn pair(conn: &rusqlite::Connection) -> bool {
    let ours = |f: *mut ffi::sqlite3_file, kind: Kind| {
        // SAFETY: a file SQLite hands out is allocated with this VFS's size when its
        // methods are ours, and then `open` initialised it; otherwise only `pMethods`
        // (the first field of every sqlite3_file) is read.
        !f.is_null()
            && unsafe { ptr::eq((*f).pMethods, &raw const METHODS) }
            && unsafe { file(f) }.kind == kind
    };
    let mut db: *mut ffi::sqlite3_file = ptr::null_mut();
    let mut wal: *mut ffi::sqlite3_file = ptr::null_mut();
    // SAFETY: the handle is open while `conn` is borrowed; both file controls only store a
    // file pointer into the given location.
    let got = unsafe {
        let handle = conn.handle();
        ffi::sqlite3_file_control(
            handle,
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut db).cast(),
        ) == ffi::SQLITE_OK
            && ffi::sqlite3_file_control(
                handle,
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_JOURNAL_POINTER,
                (&raw mut wal).cast(),
            ) == ffi::SQLITE_OK
    };
    if !got || !ours(db, Kind::Database) || !ours(wal, Kind::Wal) {
        return false;
    }
    // SAFETY: both are open files of this VFS (checked above) of this connection.
    unsafe {
        file(db).peer = wal.cast();
        file(wal).peer = db.cast();
    }
    true
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
    ffi::SQLITE_OK
}

macro_rules! forward {
    ($this:expr, $method:ident ($($arg:expr),*), $missing:expr) => {
        match $this.real_methods().$method {
            // SAFETY: the default VFS's method on its open file, with SQLite's arguments.
            Some(m) => unsafe { m($this.real, $($arg),*) },
            None => $missing,
        }
    };
}

unsafe extern "C" fn close(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes only files `open` opened.
    let this = unsafe { file(f) };
    let mut rc = this.write_gathered();
    if this.kind == Kind::Database {
        let peer = this.write_peer();
        if rc == ffi::SQLITE_OK {
            rc = peer;
        }
    }
    if !this.peer.is_null() {
        // SAFETY: the peer is open (see File::write_peer); it forgets this file.
        unsafe { (*this.peer).peer = ptr::null_mut() };
        this.peer = ptr::null_mut();
    }
    let closed = forward!(this, xClose(), ffi::SQLITE_OK);
    // SAFETY: the File was written by `open`; SQLite frees the memory after this.
    unsafe { ptr::drop_in_place(&raw mut this.gathered) };
    if rc == ffi::SQLITE_OK { closed } else { rc }
}

unsafe extern "C" fn read(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    let rc = this.write_gathered();
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    forward!(this, xRead(buf, amt, offset), ffi::SQLITE_IOERR_READ)
}

unsafe extern "C" fn write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    if !this.gathers() {
        let rc = this.write_gathered();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        return forward!(this, xWrite(buf, amt, offset), ffi::SQLITE_IOERR_WRITE);
    }
    let Ok(len) = usize::try_from(amt) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: SQLite passes `amt` readable bytes at `buf`.
    let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    this.write(bytes, offset)
}

unsafe extern "C" fn truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    let rc = this.write_gathered();
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    forward!(this, xTruncate(size), ffi::SQLITE_IOERR_TRUNCATE)
}

unsafe extern "C" fn sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    let rc = this.write_gathered();
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    forward!(this, xSync(flags), ffi::SQLITE_IOERR_FSYNC)
}

unsafe extern "C" fn file_size(f: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    let rc = this.write_gathered();
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    forward!(this, xFileSize(size), ffi::SQLITE_IOERR_FSTAT)
}

unsafe extern "C" fn lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    forward!(this, xLock(level), ffi::SQLITE_IOERR_LOCK)
}

unsafe extern "C" fn unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    forward!(this, xUnlock(level), ffi::SQLITE_IOERR_UNLOCK)
}

unsafe extern "C" fn check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    forward!(
        this,
        xCheckReservedLock(out),
        ffi::SQLITE_IOERR_CHECKRESERVEDLOCK
    )
}

unsafe extern "C" fn file_control(f: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    let rc = this.write_gathered();
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    forward!(this, xFileControl(op, arg), ffi::SQLITE_NOTFOUND)
}

unsafe extern "C" fn sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    forward!(this, xSectorSize(), 4096)
}

unsafe extern "C" fn device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    forward!(this, xDeviceCharacteristics(), 0)
}

unsafe extern "C" fn shm_map(
    f: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    let rc = this.write_peer();
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    forward!(
        this,
        xShmMap(region, size, extend, out),
        ffi::SQLITE_IOERR_SHMMAP
    )
}

unsafe extern "C" fn shm_lock(
    f: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    let rc = this.write_peer();
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    forward!(this, xShmLock(offset, n, flags), ffi::SQLITE_IOERR_SHMLOCK)
}

unsafe extern "C" fn shm_barrier(f: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    // After this barrier SQLite makes a commit visible to every connection; the barrier
    // cannot fail, so frames that cannot be written now end the process instead.
    // SAFETY: as in File::write_peer.
    if !this.peer.is_null() && unsafe { !(*this.peer).gathered.is_empty() } {
        WRITTEN_AT_BARRIER.fetch_add(1, Ordering::Relaxed);
    }
    if this.write_peer() != ffi::SQLITE_OK {
        std::process::abort();
    }
    forward!(this, xShmBarrier(), ());
}

unsafe extern "C" fn shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    let rc = this.write_peer();
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    forward!(this, xShmUnmap(delete), ffi::SQLITE_OK)
}

unsafe extern "C" fn fetch(
    f: *mut ffi::sqlite3_file,
    offset: i64,
    amt: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    forward!(this, xFetch(offset, amt, out), {
        // SAFETY: SQLite passes a place for the pointer; null means "read it instead".
        unsafe { *out = ptr::null_mut() };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn unfetch(f: *mut ffi::sqlite3_file, offset: i64, p: *mut c_void) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    forward!(this, xUnfetch(offset, p), ffi::SQLITE_OK)
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

// The VFS's own methods go to the default VFS with its own object.

unsafe extern "C" fn delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    let real = real_vfs(vfs);
    // SAFETY: the default VFS's method with SQLite's arguments.
    unsafe {
        (*real)
            .xDelete
            .map_or(ffi::SQLITE_IOERR_DELETE, |m| m(real, name, sync_dir))
    }
}

unsafe extern "C" fn access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    let real = real_vfs(vfs);
    // SAFETY: the default VFS's method with SQLite's arguments.
    unsafe {
        (*real)
            .xAccess
            .map_or(ffi::SQLITE_IOERR_ACCESS, |m| m(real, name, flags, out))
    }
}

unsafe extern "C" fn full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    let real = real_vfs(vfs);
    // SAFETY: the default VFS's method with SQLite's arguments.
    unsafe {
        (*real)
            .xFullPathname
            .map_or(ffi::SQLITE_CANTOPEN, |m| m(real, name, n, out))
    }
}

unsafe extern "C" fn randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    let real = real_vfs(vfs);
    // SAFETY: the default VFS's method with SQLite's arguments.
    unsafe { (*real).xRandomness.map_or(0, |m| m(real, n, out)) }
}

unsafe extern "C" fn sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    let real = real_vfs(vfs);
    // SAFETY: the default VFS's method with SQLite's arguments.
    unsafe { (*real).xSleep.map_or(0, |m| m(real, micros)) }
}

unsafe extern "C" fn current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    let real = real_vfs(vfs);
    // SAFETY: the default VFS's method with SQLite's arguments.
    unsafe {
        (*real)
            .xCurrentTime
            .map_or(ffi::SQLITE_ERROR, |m| m(real, out))
    }
}

unsafe extern "C" fn last_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    let real = real_vfs(vfs);
    // SAFETY: the default VFS's method with SQLite's arguments.
    unsafe { (*real).xGetLastError.map_or(0, |m| m(real, n, out)) }
}

unsafe extern "C" fn current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    let real = real_vfs(vfs);
    // SAFETY: the default VFS's method with SQLite's arguments (version 2 and up has it).
    unsafe {
        (*real)
            .xCurrentTimeInt64
            .map_or(ffi::SQLITE_ERROR, |m| m(real, out))
    }
}
