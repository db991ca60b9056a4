//! Loopback ports for test servers, handed out so that two tests never get the same one.
//!
//! A server is told its ports before it binds them, so a port "reserved" by binding port 0 and
//! letting go is free for anyone until the server binds it: another test's `bind(0)` or any
//! outgoing connection may take it meanwhile (both draw from the kernel's ephemeral range,
//! 32768-60999 on Linux), and a member then talks to a stranger. Ports here come from below
//! that range, where the kernel never hands out anything by itself, one at a time from a
//! process-wide counter; each test process starts at its own offset, and a port something
//! already holds is skipped.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The range handed out: below Linux's default ephemeral range, above well-known services.
const FIRST: u32 = 15_000;
const SPAN: u32 = 17_000;

/// Returns `n` distinct loopback ports no other caller in this process gets.
pub fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| next_free_port()).collect()
}

fn next_free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Processes started together (two test binaries run by hand) begin far apart.
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        let port = u16::try_from(FIRST + offset).expect("the range fits in a port");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN);
}
