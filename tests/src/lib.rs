//! Helpers shared by the integration tests, the tools' tests and the benches.

pub mod daemon;
pub mod raw;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// A TCP port on 127.0.0.1 that nothing listens on, for a target a test starts.
///
/// Ports come from below the kernel's ephemeral range, so no client connection of a
/// concurrent test can take the port between this call and the target's bind (asking the
/// kernel for port 0 and dropping the socket has that race). Each process starts at an
/// offset of its own and never hands out a port twice.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = ephemeral_low().clamp(12_000, 32_768);
    let base = 10_000u16;
    let span = u32::from(low - base);
    let start = std::process::id().wrapping_mul(97) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = base + ((start + n % span) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port on 127.0.0.1 between {base} and {low}");
}

/// A child process (a polluxd a test started) killed and reaped if the test panics, so
/// one failure does not leave a daemon holding its port and core for the tests after it.
#[derive(Debug)]
pub struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    pub fn new(child: std::process::Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }

    /// The child's process ID.
    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("child present").id()
    }

    /// The child, for a test that ends it itself.
    pub fn take(mut self) -> std::process::Child {
        self.0.take().expect("child present")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| super::free_port()).collect();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len());
        assert!(
            ports
                .iter()
                .all(|&p| p >= 10_000 && p < super::ephemeral_low())
        );
    }
}
