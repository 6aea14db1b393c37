//! A TCP stream that is woken for a large read only once enough of it has arrived.
//!
//! A server sends a message as many small writes (Dovecot: a TLS record of 4 KB each), and a
//! reader waiting in epoll is woken for each: for a 100 KB message about 16 wake-ups, each
//! an `epoll_wait` that sleeps, a switch back and a `recvfrom` (a third of the CPU
//! `scripts/bench` measured per gigabyte). When the reader knows that many more bytes are
//! coming (an IMAP literal announces its length), it asks, through a [`LowWater`] handle,
//! not to be woken before that many are there: the socket's receive low-water mark
//! (`SO_RCVLOWAT`, socket(7)), which Linux honours for epoll as well as for blocking reads.
//!
//! The mark is set only when a read finds the socket empty, and only when it changes; what
//! the kernel already holds is read as usual. It never asks for more than will come: the
//! reader states a floor of bytes still to arrive (see [`LowWater::expect`]), and the mark
//! stays below that floor and below [`MAX_MARK`], so that a slow link still shows progress
//! well within `io-timeout`.

use std::io;
use std::os::fd::AsFd as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The largest mark set: at the default `io-timeout` (120 s) a link of 0.5 KB/s still
/// shows progress in time.
pub const MAX_MARK: usize = 64 * 1024;

/// Below this a mark saves too little to be worth its system call.
const MIN_MARK: usize = 8 * 1024;

/// Tells a [`Watermarked`] stream, from above any buffering layers, how many bytes are
/// sure to arrive before the reader needs to be woken. Clones share the value.
#[derive(Debug, Clone, Default)]
pub struct LowWater(Arc<AtomicUsize>);

impl LowWater {
    /// At least `bytes` more bytes will arrive on the socket that the reader wants before
    /// anything else: wake it only when that many are there (or [`MAX_MARK`]). 0: wake it
    /// for any byte.
    pub fn expect(&self, bytes: usize) {
        self.0.store(bytes, Ordering::Relaxed);
    }
}

/// A [`TcpStream`] whose receive low-water mark follows a [`LowWater`] handle.
#[derive(Debug)]
pub struct Watermarked {
    tcp: TcpStream,
    wanted: LowWater,
    /// The mark the socket has (1 is the kernel's default).
    set: usize,
}

impl Watermarked {
    /// `tcp`, and the handle that sets its marks.
    #[must_use]
    pub fn new(tcp: TcpStream) -> (Self, LowWater) {
        let wanted = LowWater::default();
        (
            Self {
                tcp,
                wanted: wanted.clone(),
                set: 1,
            },
            wanted,
        )
    }

    /// The stream.
    #[must_use]
    pub fn get_ref(&self) -> &TcpStream {
        &self.tcp
    }

    /// Sets the mark the handle asks for, if it differs from the socket's. A failure
    /// leaves the mark as it was: the kernel's default of 1 is always safe.
    fn follow(&mut self) {
        let wanted = self.wanted.0.load(Ordering::Relaxed);
        let mark = if wanted < MIN_MARK {
            1
        } else {
            wanted.min(MAX_MARK)
        };
        if mark != self.set && mailferry_sys::set_recv_lowat(self.tcp.as_fd(), mark).is_ok() {
            self.set = mark;
        }
    }
}

impl AsyncRead for Watermarked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if polled.is_pending() {
            // After the read found nothing: setting the mark signals readiness itself when
            // enough is already queued, so no wake-up is lost between the two.
            this.follow();
        }
        polled
    }
}

impl AsyncWrite for Watermarked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::time::Duration;

    use tokio::io::AsyncReadExt as _;

    use super::*;

    /// A connected pair: the watermarked reader and a blocking writer.
    async fn pair() -> (Watermarked, LowWater, std::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let writer = std::thread::spawn(move || std::net::TcpStream::connect(addr));
        let (tcp, _) = listener.accept().await.expect("accept");
        let writer = writer.join().expect("thread").expect("connect");
        writer.set_nodelay(true).expect("nodelay");
        let (reader, low) = Watermarked::new(tcp);
        (reader, low, writer)
    }

    /// Reads until `n` bytes came; returns how many reads brought some.
    async fn reads_for(reader: &mut Watermarked, n: usize) -> usize {
        let (mut got, mut reads) = (Vec::with_capacity(n), 0);
        while got.len() < n {
            assert!(reader.read_buf(&mut got).await.expect("read") > 0, "closed");
            reads += 1;
        }
        reads
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_reader_is_woken_once_the_expected_bytes_are_there_not_for_each_piece() {
        for (expect, most) in [(0, usize::MAX), (30_000, 3)] {
            let (mut reader, low, mut writer) = pair().await;
            low.expect(expect);
            let feeding = std::thread::spawn(move || {
                for _ in 0..30 {
                    writer.write_all(&[b'x'; 1000]).expect("write");
                    std::thread::sleep(Duration::from_millis(2));
                }
                writer
            });
            let reads = reads_for(&mut reader, 30_000).await;
            drop(feeding.join().expect("thread"));
            if expect == 0 {
                // Without a mark, a read for (nearly) every piece: what the mark saves.
                assert!(reads > 10, "{reads} reads without a mark");
            } else {
                assert!(reads <= most, "{reads} reads for 30 pieces with a mark");
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn lowering_the_mark_wakes_a_reader_whose_bytes_are_already_there() {
        let (mut reader, low, mut writer) = pair().await;
        low.expect(50_000);
        let mut got = Vec::with_capacity(10_000);
        // The socket is found empty: the mark is set.
        let waited = tokio::time::timeout(Duration::from_millis(50), reader.read_buf(&mut got));
        assert!(waited.await.is_err(), "nothing was sent");
        assert_eq!(reader.set, 50_000);
        writer.write_all(&[b'x'; 10_000]).expect("write");
        let waited = tokio::time::timeout(Duration::from_millis(300), reader.read_buf(&mut got));
        assert!(waited.await.is_err(), "woken below the mark");
        // Nothing more arrives: the next wait sets the mark back to 1, which alone signals
        // the bytes already queued.
        low.expect(0);
        let read = tokio::time::timeout(Duration::from_secs(5), reader.read_buf(&mut got));
        assert_eq!(read.await.expect("woken").expect("read"), 10_000);
        assert_eq!(reader.set, 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_mark_is_capped_and_small_ones_are_not_set() {
        let (mut reader, low, mut writer) = pair().await;
        let mut got = Vec::new();
        for (expect, set) in [
            (10 * MAX_MARK, MAX_MARK),
            (MIN_MARK - 1, 1),
            (MIN_MARK, MIN_MARK),
        ] {
            low.expect(expect);
            let wait = tokio::time::timeout(Duration::from_millis(50), reader.read_buf(&mut got));
            assert!(wait.await.is_err(), "nothing was sent");
            assert_eq!(reader.set, set, "expecting {expect}");
        }
        writer.write_all(b"x").expect("write");
        drop(writer);
    }
}
