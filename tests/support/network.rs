//! Network partitions without root: every member's Raft traffic to every other member goes
//! through a proxy of its own (one per direction of each link, set up with the test builds'
//! `PHOENIX_TEST_PEER_ROUTES`), and the test cuts links by cutting proxies. A cut link drops its
//! connections and holds new ones unanswered until it heals, as a dropped-packet partition does.
//! Client traffic is not touched: clients still reach a member on the wrong side.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One direction of one link: member `from` dialing member `to`.
struct Link {
    port: u16,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut and heal: connections drop when it changes.
    generation: watch::Sender<u64>,
}

pub struct Network {
    links: BTreeMap<(usize, usize), Link>,
    peer_ports: Vec<u16>,
}

impl Network {
    /// Proxies for every ordered pair of the members whose peer ports are `peer_ports`. The
    /// proxies bind the kernel's ephemeral ports, which the members' ports (see
    /// `support::free_ports`) never are.
    pub async fn new(peer_ports: &[u16]) -> Network {
        let mut links = BTreeMap::new();
        for from in 0..peer_ports.len() {
            for to in (0..peer_ports.len()).filter(|&to| to != from) {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a proxy");
                let port = listener.local_addr().expect("proxy address").port();
                let (cut, generation) = (Arc::new(AtomicBool::new(false)), watch::channel(0).0);
                tokio::spawn(proxy(listener, peer_ports[to], cut.clone(), generation.subscribe()));
                links.insert((from, to), Link { port, cut, generation });
            }
        }
        Network { links, peer_ports: peer_ports.to_vec() }
    }

    /// The environment that routes member `from`'s peer traffic through its proxies.
    pub fn routes(&self, from: usize) -> (String, String) {
        let routes: Vec<String> = self
            .links
            .iter()
            .filter(|((f, _), _)| *f == from)
            .map(|((_, to), link)| format!("http://127.0.0.1:{}=http://127.0.0.1:{}", self.peer_ports[*to], link.port))
            .collect();
        ("PHOENIX_TEST_PEER_ROUTES".to_string(), routes.join(","))
    }

    /// Cuts every link between `side` and the other members, both ways.
    pub fn partition(&self, side: &[usize]) {
        for &(from, to) in self.links.keys() {
            if side.contains(&from) != side.contains(&to) {
                self.cut(from, to);
            }
        }
    }

    /// Cuts member `from`'s traffic to member `to` only: `to` still reaches `from`.
    pub fn cut(&self, from: usize, to: usize) {
        let link = &self.links[&(from, to)];
        link.cut.store(true, Ordering::SeqCst);
        link.generation.send_modify(|g| *g += 1);
    }

    pub fn heal(&self) {
        for link in self.links.values() {
            if link.cut.swap(false, Ordering::SeqCst) {
                link.generation.send_modify(|g| *g += 1);
            }
        }
    }
}

async fn proxy(listener: TcpListener, to_port: u16, cut: Arc<AtomicBool>, generation: watch::Receiver<u64>) {
    while let Ok((inbound, _)) = listener.accept().await {
        let (cut, mut changed) = (cut.clone(), generation.clone());
        changed.mark_unchanged();
        tokio::spawn(async move {
            if cut.load(Ordering::SeqCst) {
                // Held unanswered until the link heals (or is cut again), then dropped.
                let _ = changed.changed().await;
                return;
            }
            let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", to_port)).await else { return };
            let mut inbound = inbound;
            // As the members do: small Raft messages must not wait out Nagle's delay.
            if inbound.set_nodelay(true).and(outbound.set_nodelay(true)).is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = changed.changed() => {}
            }
        });
    }
}
