//! Free loopback ports for `scripts/bench.sh`, which must not assume any port is unused.

use std::net::TcpListener;

use crate::error::BenchError;

/// `count` distinct ports that were free on 127.0.0.1 a moment ago. All are held open until
/// every one is chosen, so the set has no duplicates; they are released on return.
pub fn free_ports(count: usize) -> Result<Vec<u16>, BenchError> {
    let listeners = (0..count).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports = free_ports(9).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 9);
        assert!(ports.iter().all(|&p| p != 0));
        TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
    }
}
