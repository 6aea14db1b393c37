//! Benchmark (not a test): what one SMTP round trip without PIPELINING costs the sender in
//! CPU on this machine, apart from anything mailferry does. A client writes a command
//! line to a loopback TCP peer and waits for its one-line reply, as mailferry does four
//! times a message for a receiver that does not offer PIPELINING (MAIL, RCPT, DATA, the
//! data); the client's thread CPU time (user + system) is divided by the round trips.
//!
//! Three placements: as the scheduler puts them, the peer pinned to the other CPU, and
//! both pinned to one CPU. On a virtual machine a wake-up of a peer that sleeps on
//! another vCPU is an inter-processor interrupt, and going to sleep halts the vCPU: both
//! are exits to the hypervisor, which the sender pays for in system time.
//!
//!   cargo bench -p mailferry-testkit --bench round_trip [-- ROUND_TRIPS]   (50,000)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rustix::thread::{CpuSet, sched_setaffinity};
use rustix::time::{ClockId, clock_gettime};

const COMMAND: &[u8] = b"MAIL FROM:<bench@home.example>\r\n";
const REPLY: &[u8] = b"250 2.1.0 Ok\r\n";

fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

fn pin(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        let mut set = CpuSet::new();
        set.set(cpu);
        sched_setaffinity(None, &set).expect("sched_setaffinity");
    }
}

/// Client CPU and wall time per round trip, in µs.
fn run(round_trips: u32, client_cpu: Option<usize>, peer_cpu: Option<usize>) -> (f64, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peer = std::thread::spawn(move || {
        pin(peer_cpu);
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; 8192];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            s.write_all(REPLY).expect("reply");
        }
    });
    pin(client_cpu);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = [0u8; 8192];
    let mut once = || {
        s.write_all(COMMAND).expect("command");
        let mut got = 0;
        while got < REPLY.len() {
            got += s.read(&mut buf).expect("reply");
        }
    };
    for _ in 0..1000 {
        once();
    }
    let (cpu, wall) = (thread_cpu(), Instant::now());
    for _ in 0..round_trips {
        once();
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(round_trips);
    let result = (per(thread_cpu() - cpu), per(wall.elapsed()));
    drop(s);
    peer.join().expect("peer");
    result
}

fn main() {
    let round_trips: u32 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or(50_000, |a| a.parse().expect("ROUND_TRIPS is a number"));
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut placements = vec![("as scheduled", None, None)];
    if cpus >= 2 {
        placements.push(("other CPU", Some(0), Some(1)));
    }
    placements.push(("same CPU", Some(0), Some(0)));
    for (what, client, peer) in placements {
        let (cpu, wall) = run(round_trips, client, peer);
        // At 10,000 messages a GB (scripts/bench's mix), four round trips a message.
        println!(
            "{what:>12}: {cpu:5.1} us CPU and {wall:5.1} us wall a round trip; four a message at 10,000 messages a GB: {:.2} s per GB",
            cpu * 4.0 * 10_000.0 / 1e6
        );
    }
}
