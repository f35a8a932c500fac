//! The `proxy` network backend: every connection to a node goes through a
//! TCP proxy in the harness, which knows who is calling from the source
//! address (node j dials from 127.0.0.(10 + j); anything else is a client)
//! and can cut, or delay, each direction of each link.
//!
//! A cut link silently drops what is sent over it (the TCP connection stays
//! up, as with a pulled cable), or, in `reset` mode, closes its connections
//! and refuses new ones. Healing closes every connection that lost data, so
//! the two sides reconnect with a clean stream.
//!
//! A *silent* node is one whose socket accepts connections and never
//! answers: its proxy accepts every new connection, client or peer, and
//! holds it without connecting it to the node; what flows over its existing
//! connections is dropped both ways, and so is what the node sends to its
//! peers over connections it dialled (a node that answers nobody, as a
//! wedged process whose kernel still accepts, not one whose client half
//! still works). Healing closes all of those connections.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// One end of a link.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum End {
    Node(usize),
    Client,
}

/// The loopback address node `id` listens on and dials from.
pub fn node_ip(id: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        10 + u8::try_from(id).unwrap_or(200),
    ))
}

fn end_of(addr: SocketAddr) -> End {
    match addr.ip() {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && v4.octets()[3] > 10 => {
            End::Node(usize::from(v4.octets()[3] - 10))
        }
        _ => End::Client,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    /// Drop silently.
    Drop,
    /// Close the connections and refuse new ones.
    Reset,
}

#[derive(Default)]
struct LinkState {
    /// Directed links that are cut: (from, to).
    cut: HashMap<(End, End), CutMode>,
    delay: HashMap<(End, End), Duration>,
    /// Silent nodes: they accept connections and answer nothing.
    silent: HashSet<usize>,
    /// Connections that dropped data: closed when healed.
    tainted: HashSet<u64>,
}

impl LinkState {
    /// Whether what `from` sends to `to` is lost: the link is cut, or
    /// either end is a silent node.
    fn drops(&self, from: End, to: End) -> bool {
        self.cut.contains_key(&(from, to))
            || [from, to]
                .iter()
                .any(|e| matches!(e, End::Node(n) if self.silent.contains(n)))
    }
}

/// The state of every link, shared by all proxies.
#[derive(Clone)]
pub struct Network {
    state: Arc<Mutex<LinkState>>,
    /// Bumped to make connections re-check whether they must close.
    epoch: watch::Sender<u64>,
    next_conn: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            epoch: watch::channel(0).0,
            next_conn: Arc::default(),
        }
    }
}

impl Network {
    fn state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts `from` → `to` (one direction).
    pub fn cut(&self, from: End, to: End, mode: CutMode) {
        self.state().cut.insert((from, to), mode);
        self.epoch.send_modify(|e| *e += 1);
    }

    pub fn delay(&self, from: End, to: End, by: Duration) {
        self.state().delay.insert((from, to), by);
    }

    /// Makes node `id` silent: its proxy accepts every connection and
    /// forwards nothing either way, new connections included, and what it
    /// sends to its peers is lost, until [`Network::heal`].
    pub fn silence(&self, id: usize) {
        self.state().silent.insert(id);
        self.epoch.send_modify(|e| *e += 1);
    }

    fn is_silent(&self, id: usize) -> bool {
        self.state().silent.contains(&id)
    }

    /// Restores every link; connections that lost data are closed.
    pub fn heal(&self) {
        let mut s = self.state();
        s.cut.clear();
        s.delay.clear();
        s.silent.clear();
        drop(s);
        self.epoch.send_modify(|e| *e += 1);
    }

    fn cut_mode(&self, from: End, to: End) -> Option<CutMode> {
        self.state().cut.get(&(from, to)).copied()
    }

    /// Whether a connection must close now: its link is reset, or it lost
    /// data and its link is no longer cut.
    fn must_close(&self, conn: u64, a: End, b: End) -> bool {
        let s = self.state();
        let reset = [(a, b), (b, a)]
            .iter()
            .any(|k| s.cut.get(k) == Some(&CutMode::Reset));
        let healed = !s.drops(a, b) && !s.drops(b, a);
        reset || (healed && s.tainted.contains(&conn))
    }

    /// Starts a proxy for node `id` on `listen`, forwarding to `target`.
    pub async fn proxy(
        &self,
        id: usize,
        listen: SocketAddr,
        target: SocketAddr,
    ) -> anyhow::Result<()> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("proxy for node {id} cannot listen on {listen}: {e}"))?;
        let net = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, peer)) = listener.accept().await else {
                    continue;
                };
                let from = end_of(peer);
                let to = End::Node(id);
                if matches!(net.cut_mode(from, to), Some(CutMode::Reset))
                    || matches!(net.cut_mode(to, from), Some(CutMode::Reset))
                {
                    continue; // refused: dropping the socket resets it
                }
                if net.is_silent(id) {
                    // Accepted, never connected to the node, never
                    // answered; closed when the node is healed.
                    tokio::spawn(net.clone().hold(inbound, id));
                    continue;
                }
                let net = net.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    net.serve(inbound, outbound, from, to).await;
                });
            }
        });
        Ok(())
    }

    /// Holds a connection accepted while node `id` was silent, reading
    /// nothing and answering nothing, until the node is healed; then closes
    /// it, so the caller reconnects to a node that answers.
    async fn hold(self, inbound: TcpStream, id: usize) {
        let mut epoch = self.epoch.subscribe();
        while self.is_silent(id) {
            if epoch.changed().await.is_err() {
                break;
            }
        }
        drop(inbound);
    }

    async fn serve(&self, inbound: TcpStream, outbound: TcpStream, from: End, to: End) {
        let conn = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (in_read, in_write) = inbound.into_split();
        let (out_read, out_write) = outbound.into_split();
        let forward = self.pump(conn, in_read, out_write, from, to);
        let backward = self.pump(conn, out_read, in_write, to, from);
        let mut epoch = self.epoch.subscribe();
        let watchdog = async {
            loop {
                if self.must_close(conn, from, to) {
                    return;
                }
                if epoch.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            () = forward => {}
            () = backward => {}
            () = watchdog => {}
        }
        self.state().tainted.remove(&conn);
    }

    /// Copies one direction. Reading and writing are separate so a delay
    /// is latency, not a throughput limit: each chunk is stamped when it
    /// arrives and written once its delay has passed, while later chunks
    /// keep arriving.
    async fn pump(
        &self,
        conn: u64,
        mut read: tokio::net::tcp::OwnedReadHalf,
        mut write: tokio::net::tcp::OwnedWriteHalf,
        from: End,
        to: End,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Option<Instant>, Vec<u8>)>(1024);
        let reader = async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let delay = {
                    let mut s = self.state();
                    if s.drops(from, to) {
                        s.tainted.insert(conn);
                        continue;
                    }
                    s.delay.get(&(from, to)).copied()
                };
                let due = delay.map(|d| Instant::now() + d);
                if tx.send((due, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        };
        let writer = async move {
            while let Some((due, bytes)) = rx.recv().await {
                if let Some(due) = due {
                    tokio::time::sleep_until(due).await;
                }
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            () = reader => {}
            () = writer => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_told_apart_by_address() {
        assert_eq!(end_of(SocketAddr::new(node_ip(3), 5000)), End::Node(3));
        assert_eq!(end_of("127.0.0.1:5000".parse().expect("addr")), End::Client);
    }

    /// An echo server; returns its address.
    async fn echo_server() -> SocketAddr {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1024];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        target
    }

    #[tokio::test]
    async fn a_silent_node_accepts_and_never_answers_until_healed() {
        let target = echo_server().await;
        let net = Network::default();
        let port = std::net::TcpListener::bind(SocketAddr::new(node_ip(2), 0))
            .and_then(|l| l.local_addr())
            .expect("free port");
        net.proxy(2, port, target).await.expect("proxy");
        let mut before = TcpStream::connect(port).await.expect("connect");
        let mut b = [0u8; 4];
        before.write_all(b"ping").await.expect("write");
        before.read_exact(&mut b).await.expect("echo");

        net.silence(2);
        // An existing connection: nothing comes back.
        before.write_all(b"lost").await.expect("write");
        let r = tokio::time::timeout(Duration::from_millis(200), before.read(&mut b)).await;
        assert!(r.is_err(), "a silent node answers nothing");
        // A new connection, from a client or from a peer, is accepted and
        // never answered.
        let mut client = TcpStream::connect(port).await.expect("accepted");
        client.write_all(b"anyone").await.expect("write");
        let r = tokio::time::timeout(Duration::from_millis(200), client.read(&mut b)).await;
        assert!(r.is_err(), "a new connection hears nothing either");

        net.heal();
        // Both are closed at the heal; a new connection works.
        for mut c in [before, client] {
            let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b))
                .await
                .expect("closed promptly")
                .unwrap_or(0);
            assert_eq!(n, 0);
        }
        let mut c = TcpStream::connect(port).await.expect("reconnect");
        c.write_all(b"pong").await.expect("write");
        c.read_exact(&mut b).await.expect("echo");
        assert_eq!(&b, b"pong");
    }

    #[tokio::test]
    async fn a_cut_drops_one_direction_and_healing_reconnects() {
        let target = echo_server().await;
        let net = Network::default();
        let listen = SocketAddr::new(node_ip(1), 0);
        // Find a free port on the node's address for the proxy.
        let port = std::net::TcpListener::bind(listen)
            .and_then(|l| l.local_addr())
            .expect("free port");
        net.proxy(1, port, target).await.expect("proxy");
        let mut c = TcpStream::connect(port).await.expect("connect");
        c.write_all(b"ping").await.expect("write");
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.expect("echo");
        assert_eq!(&b, b"ping");

        net.cut(End::Client, End::Node(1), CutMode::Drop);
        c.write_all(b"lost").await.expect("write");
        let r = tokio::time::timeout(Duration::from_millis(200), c.read(&mut b)).await;
        assert!(r.is_err(), "nothing comes back over a cut link");
        net.heal();
        // The connection that lost data is closed; a new one works.
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b))
            .await
            .expect("closed promptly")
            .unwrap_or(0);
        assert_eq!(n, 0);
        let mut c = TcpStream::connect(port).await.expect("reconnect");
        c.write_all(b"pong").await.expect("write");
        c.read_exact(&mut b).await.expect("echo");
        assert_eq!(&b, b"pong");
    }
}
