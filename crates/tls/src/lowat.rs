//! A TCP stream that is woken for a large read only once enough of it has arrived.
//!
//! A server sends a message as many small writes (Dovecot: a TLS record of 4 KB each), and a
//! reader waiting in epoll is woken for each: for a 100 KB message about 16 wake-ups, each
//! an `epoll_wait` that sleeps, a switch back and a `recvfrom` (a third of the CPU
//! `scripts/bench` measured per gigabyte). When the reader knows that many more bytes are
//! coming, it asks, through a [`LowWater`] handle, not to be woken before that many are
//! there: the socket's receive low-water mark (`SO_RCVLOWAT`, socket(7)), which Linux
//! honours for epoll as well as for blocking reads.
//!
//! The mark is set only when a read finds the socket empty, and only when it changes; what
//! the kernel already holds is read as usual. The mark stays below [`MAX_MARK`], so that a
//! slow link still shows progress well within `io-timeout`. Two kinds of knowledge set it:
//! - a count that is sure ([`LowWater::expect`]: an IMAP literal announces its length):
//!   the mark stays below the bytes still to come, so it never waits for bytes that do not;
//! - a count that may be wrong ([`LowWater::estimate`]: a POP3 `LIST` size, an estimate on
//!   Exchange and Yahoo): the mark is kept for at most [`PATIENCE`] of waiting, then it is
//!   1 until the next read brings something. A size that is too large costs that much
//!   time once per message, never a stall.
//!
//! While the run's reads are lazy ([`LazyReads`], on while a delivery is in flight) the
//! mark is [`LAZY_MARK`] whatever the reader expects, for at most [`PATIENCE`] of waiting:
//! the run is woken soon anyway (by the destination's reply), and every poll takes what
//! the socket holds below the mark, straight from the socket (tokio's readiness knows
//! nothing of bytes that made no event). Dovecot writes a message in records of 4 KB, and
//! a run that waited for each of them while its delivery also waited slept once more for
//! most messages.

use std::io;
use std::os::fd::AsFd as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use mailferry_core::LazyReads;

/// The largest mark set: at the default `io-timeout` (120 s) a link of 0.5 KB/s still
/// shows progress in time.
pub const MAX_MARK: usize = 64 * 1024;

/// The mark while reads are lazy: a fetch batch's worth (1 MiB). It is kept for the
/// patience only, so a slow link waits no longer for it than for a small one. A receiver
/// that takes 3 ms to answer a message's data (aiosmtpd) lets Dovecot send more than 64 KB
/// meanwhile: with [`MAX_MARK`] here the reader was woken for it, about half a sleep more a
/// message in `scripts/bench`. Linux grows the socket's receive buffer to hold the mark,
/// and caps the mark at half the largest buffer (`tcp_rmem`: 3 MB by default).
pub const LAZY_MARK: usize = 1024 * 1024;

/// How long a mark from an estimate, or a lazy read's, is kept while nothing comes.
pub const PATIENCE: Duration = Duration::from_millis(20);

/// At most this much of a buffer not yet initialised is made ready for a lazy read (one
/// that the socket was not asked to wake for): a TLS layer hands over initialised buffers.
const LAZY_READ: usize = 16 * 1024;

/// Below this a mark saves too little to be worth its system call.
const MIN_MARK: usize = 8 * 1024;

/// The most of the reader's bytes that can have left the socket without reaching it: the
/// part of a TLS record that has come but is not complete yet (a record holds at most 16 KB
/// of plaintext: RFC 8446 section 5.1, RFC 5246 section 6.2.1), with 1 KB to spare. (The
/// read-ahead buffer under TLS is empty whenever the socket is waited for, and rustls
/// hands out every whole record it holds before the socket is read.) A mark is this much
/// below what the reader is still to get.
const IN_FLIGHT: usize = 17 * 1024;

/// The flag of [`LowWater`]'s value that makes it an estimate.
const ESTIMATE: usize = 1 << (usize::BITS - 1);

/// Tells a [`Watermarked`] stream, from above any buffering layers, how many bytes are to
/// arrive before the reader needs to be woken, and holds the run's [`LazyReads`]. Clones
/// share both.
#[derive(Debug, Clone, Default)]
pub struct LowWater {
    wanted: Arc<AtomicUsize>,
    lazy: LazyReads,
}

impl LowWater {
    /// The reader is still to get at least `bytes` before it can do anything else: wake it
    /// only when most of them are on the socket (or [`MAX_MARK`]). 0: for any byte.
    pub fn expect(&self, bytes: usize) {
        self.wanted
            .store(bytes.min(ESTIMATE - 1), Ordering::Relaxed);
    }

    /// About `bytes` more are to arrive, by a count that may be wrong: as
    /// [`Self::expect`], for at most [`PATIENCE`] of waiting.
    pub fn estimate(&self, bytes: usize) {
        self.wanted
            .store(bytes.min(ESTIMATE - 1) | ESTIMATE, Ordering::Relaxed);
    }

    /// The handle that makes this stream's reads lazy, for the run (`Source::lazy_reads`).
    #[must_use]
    pub fn lazy_reads(&self) -> LazyReads {
        self.lazy.clone()
    }

    /// The bytes, and whether they are an estimate.
    fn get(&self) -> (usize, bool) {
        let value = self.wanted.load(Ordering::Relaxed);
        (value & !ESTIMATE, value & ESTIMATE != 0)
    }
}

/// A [`TcpStream`] whose receive low-water mark follows a [`LowWater`] handle.
#[derive(Debug)]
pub struct Watermarked {
    tcp: TcpStream,
    wanted: LowWater,
    /// The mark the socket has (1 is the kernel's default).
    set: usize,
    /// While a mark from an estimate is waited on: when it stops being trusted. Kept
    /// between waits (reset, not reallocated); `None` before the first.
    patience: Option<Pin<Box<Sleep>>>,
    /// `patience` runs for the current wait (it is reset when a read brings something).
    waiting: bool,
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
                patience: None,
                waiting: false,
            },
            wanted,
        )
    }

    /// Sets the mark the handle asks for, if it differs from the socket's; an estimate's
    /// or a lazy read's only until its patience runs out. A failure leaves the mark as it
    /// was: the kernel's default of 1 is always safe.
    fn follow(&mut self, cx: &mut Context<'_>) {
        let (wanted, estimate) = self.wanted.get();
        let wanted = wanted.saturating_sub(IN_FLIGHT);
        let counted = if wanted < MIN_MARK {
            1
        } else {
            wanted.min(MAX_MARK)
        };
        // What the reader's count makes sure of (an estimate, nothing); a mark above it is
        // kept for the patience only.
        let sure = if estimate { 1 } else { counted };
        let mut mark = if self.wanted.lazy.is_on() {
            LAZY_MARK
        } else {
            counted
        };
        if mark > sure {
            if !self.waiting {
                let deadline = Instant::now() + PATIENCE;
                match &mut self.patience {
                    Some(timer) => timer.as_mut().reset(deadline),
                    None => self.patience = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
                self.waiting = true;
            }
            if let Some(timer) = &mut self.patience
                && timer.as_mut().poll(cx).is_ready()
            {
                mark = sure;
            }
        }
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
            if this.wanted.lazy.is_on() {
                // Bytes below a lazy mark made no event, so tokio takes the socket for
                // empty: they are taken from it directly, at this wake for something else.
                let ready = buf.initialized().len() - buf.filled().len();
                let room = buf.remaining().min(ready.max(LAZY_READ));
                match mailferry_sys::recv_now(this.tcp.as_fd(), buf.initialize_unfilled_to(room)) {
                    Ok(n) => {
                        buf.advance(n);
                        this.waiting = false;
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            // After the read found nothing: setting the mark signals readiness itself when
            // enough is already queued, so no wake-up is lost between the two.
            this.follow(cx);
        } else {
            this.waiting = false;
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

    /// Writes `pieces` pieces of 1,000 bytes, 2 ms apart; gives the writer back.
    fn feed(
        mut writer: std::net::TcpStream,
        pieces: usize,
    ) -> std::thread::JoinHandle<std::net::TcpStream> {
        std::thread::spawn(move || {
            for _ in 0..pieces {
                writer.write_all(&[b'x'; 1000]).expect("write");
                std::thread::sleep(Duration::from_millis(2));
            }
            writer
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_reader_is_woken_once_the_expected_bytes_are_there_not_for_each_piece() {
        // 60 pieces of 1,000 bytes. Without a mark, a read for (nearly) every piece: what
        // the mark saves.
        let (mut reader, _low, writer) = pair().await;
        let feeding = feed(writer, 60);
        let reads = reads_for(&mut reader, 60_000).await;
        drop(feeding.join().expect("thread"));
        assert!(reads > 30, "{reads} reads without a mark");
        // Expecting them: woken when all but IN_FLIGHT are there, then for the rest.
        let (mut reader, low, writer) = pair().await;
        low.expect(60_000);
        let feeding = feed(writer, 60);
        let reads = reads_for(&mut reader, 60_000 - IN_FLIGHT).await;
        drop(feeding.join().expect("thread"));
        assert!(reads <= 3, "{reads} reads for 43 pieces with a mark");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn lowering_the_mark_wakes_a_reader_whose_bytes_are_already_there() {
        let (mut reader, low, mut writer) = pair().await;
        low.expect(50_000 + IN_FLIGHT);
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
    async fn an_estimate_that_is_too_large_costs_its_patience_not_a_stall() {
        // A POP3 size three times the message's (Exchange's estimates: DESIGN.md): 10,000
        // bytes come, 50,000 more were announced.
        let (mut reader, low, mut writer) = pair().await;
        low.estimate(50_000 + IN_FLIGHT);
        let mut got = Vec::with_capacity(10_000);
        let waited = tokio::time::timeout(Duration::from_millis(50), reader.read_buf(&mut got));
        assert!(waited.await.is_err(), "nothing was sent");
        writer.write_all(&[b'x'; 10_000]).expect("write");
        let started = std::time::Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(5), reader.read_buf(&mut got));
        assert_eq!(read.await.expect("woken").expect("read"), 10_000);
        let took = started.elapsed();
        assert!(took < PATIENCE * 10, "woken after {took:?}");
        assert_eq!(
            reader.set, 1,
            "the estimate is not trusted past its patience"
        );
        // The next estimate is trusted again, for its patience: the mark is set.
        low.estimate(30_000 + IN_FLIGHT);
        let waited = tokio::time::timeout(PATIENCE / 4, reader.read_buf(&mut got));
        assert!(waited.await.is_err(), "nothing was sent");
        assert_eq!(reader.set, 30_000);
        writer.write_all(&[b'x'; 30_000]).expect("write");
        assert_eq!(reads_for(&mut reader, 30_000).await, 1);
    }

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls `reader` once with `waker`; the bytes it brought, if it was ready.
    fn poll_once(reader: &mut Watermarked, waker: &Arc<Wakes>) -> Option<usize> {
        let waker = std::task::Waker::from(Arc::clone(waker));
        let mut cx = Context::from_waker(&waker);
        let mut bytes = [0u8; 8192];
        let mut buf = ReadBuf::new(&mut bytes);
        match Pin::new(reader).poll_read(&mut cx, &mut buf) {
            Poll::Ready(r) => {
                r.expect("read");
                Some(buf.filled().len())
            }
            Poll::Pending => None,
        }
    }

    /// What a run saves while a delivery is in flight: 200 KB of the next messages arrive
    /// in pieces (as Dovecot writes them) and wake nothing; the run's next wake (the
    /// delivery's reply) takes them. With nothing else to wake it, the reader is woken after
    /// the patience. Without lazy reads the pieces wake the reader (the control). (With a
    /// lazy mark of 64 KB, as before, the 200 KB woke it: about half a sleep more for each
    /// message of `scripts/bench`, whose receiver takes 3 ms to answer a message's data.)
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn lazy_reads_take_a_trickle_at_the_next_wake_and_wake_after_their_patience() {
        const SENT: usize = 200 * 1000;
        for lazy in [false, true] {
            let (mut reader, low, writer) = pair().await;
            low.lazy_reads().set(lazy);
            let wakes = Arc::new(Wakes::default());
            assert_eq!(poll_once(&mut reader, &wakes), None, "nothing was sent");
            // From a thread, in real time: a write the socket could not take would block
            // this one.
            let (sent, done) = std::sync::mpsc::channel();
            let feeding = std::thread::spawn(move || {
                let mut writer = writer;
                for _ in 0..SENT / 1000 {
                    writer.write_all(&[b'x'; 1000]).expect("write");
                }
                let _ = sent.send(());
                writer
            });
            done.recv_timeout(Duration::from_secs(10))
                .expect("the socket took 200 KB unread");
            let mut writer = feeding.join().expect("thread");
            tokio::time::sleep(PATIENCE / 4).await;
            let woken = wakes.0.load(Ordering::SeqCst);
            if !lazy {
                assert!(woken > 0, "without lazy reads the pieces wake the reader");
                continue;
            }
            assert_eq!(woken, 0, "woken by 200 KB while reads are lazy");
            assert_eq!(reader.set, LAZY_MARK);
            // The run's next wake, for its delivery: what came is taken.
            let mut got = 0;
            while got < SENT {
                got += poll_once(&mut reader, &wakes).expect("what came is taken");
            }
            assert_eq!(
                poll_once(&mut reader, &wakes),
                None,
                "nothing more was sent"
            );
            // No other wake comes: after the patience the reader is woken, and the mark is
            // what the reader asked for (1: any byte).
            tokio::time::sleep(PATIENCE * 2).await;
            assert!(
                wakes.0.load(Ordering::SeqCst) > 0,
                "not woken after the patience"
            );
            assert_eq!(
                poll_once(&mut reader, &wakes),
                None,
                "nothing more was sent"
            );
            assert_eq!(reader.set, 1);
            writer.write_all(b"x").expect("write");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_mark_is_capped_and_small_ones_are_not_set() {
        let (mut reader, low, mut writer) = pair().await;
        let mut got = Vec::new();
        for (expect, set) in [
            (10 * MAX_MARK, MAX_MARK),
            (MIN_MARK - 1 + IN_FLIGHT, 1),
            (MIN_MARK + IN_FLIGHT, MIN_MARK),
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
