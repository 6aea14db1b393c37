//! The file methods of the VFS: each goes to the default VFS's file, after writing what a
//! WAL file gathered where SQLite could otherwise see the file without it.

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::atomic::Ordering;

use libsqlite3_sys as ffi;

use super::{Kind, WRITTEN_AT_BARRIER, file};

/// The default VFS's `$method` on its file; `$missing` when it has none.
macro_rules! forward {
    ($this:expr, $method:ident ($($arg:expr),*), $missing:expr) => {
        match $this.real_methods().$method {
            // SAFETY: the default VFS's method on its open file, with SQLite's arguments.
            Some(m) => unsafe { m($this.real, $($arg),*) },
            None => $missing,
        }
    };
}

/// [`forward!`] once `$this.$first()` (what a WAL file gathered, written) succeeded.
macro_rules! forward_after {
    ($this:expr, $first:ident, $method:ident ($($arg:expr),*), $missing:expr) => {{
        let rc = $this.$first();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        forward!($this, $method($($arg),*), $missing)
    }};
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
    forward_after!(
        this,
        write_gathered,
        xRead(buf, amt, offset),
        ffi::SQLITE_IOERR_READ
    )
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
        return forward_after!(
            this,
            write_gathered,
            xWrite(buf, amt, offset),
            ffi::SQLITE_IOERR_WRITE
        );
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
    forward_after!(
        this,
        write_gathered,
        xTruncate(size),
        ffi::SQLITE_IOERR_TRUNCATE
    )
}

unsafe extern "C" fn sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    forward_after!(this, write_gathered, xSync(flags), ffi::SQLITE_IOERR_FSYNC)
}

unsafe extern "C" fn file_size(f: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: SQLite calls methods on open files only.
    let this = unsafe { file(f) };
    forward_after!(
        this,
        write_gathered,
        xFileSize(size),
        ffi::SQLITE_IOERR_FSTAT
    )
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
    forward_after!(
        this,
        write_gathered,
        xFileControl(op, arg),
        ffi::SQLITE_NOTFOUND
    )
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
    forward_after!(
        this,
        write_peer,
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
    forward_after!(
        this,
        write_peer,
        xShmLock(offset, n, flags),
        ffi::SQLITE_IOERR_SHMLOCK
    )
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
    forward_after!(this, write_peer, xShmUnmap(delete), ffi::SQLITE_OK)
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

pub(super) static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
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
