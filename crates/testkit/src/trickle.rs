//! A TCP proxy on 127.0.0.1 that passes bytes slowly, both ways, at a set rate: a slow link
//! to a real server, for inactivity timeouts.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

/// The proxy; its threads end with the test process.
#[derive(Debug)]
pub struct Trickle {
    /// The port to connect to instead of the server's.
    pub port: u16,
}

impl Trickle {
    /// Forwards connections to `127.0.0.1:target` at about `bytes_per_second` each way.
    #[must_use]
    pub fn start(target: u16, bytes_per_second: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        // A receive window the size of a slow link's, not loopback's megabytes: the
        // sender's socket buffer stays small, so its writes move at the link's pace as on
        // a real uplink, instead of megabytes vanishing into kernel buffers at once.
        // (Set on the listener: accepted sockets inherit it, window scaling included.)
        rustix::net::sockopt::set_socket_recv_buffer_size(
            &listener,
            (bytes_per_second / 5).max(64 * 1024),
        )
        .expect("SO_RCVBUF");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || pump(client, server, bytes_per_second));
                std::thread::spawn(move || pump(s2, c2, bytes_per_second));
            }
        });
        Self { port }
    }
}

/// Copies `from` to `to` in slices of a tenth of the rate, one every 100 ms.
fn pump(mut from: TcpStream, mut to: TcpStream, rate: usize) {
    let mut buf = vec![0u8; (rate / 10).max(1)];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
