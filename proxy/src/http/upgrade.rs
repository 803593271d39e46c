//! Protocol upgrades (WebSocket and others): once both sides agreed on `101 Switching Protocols`,
//! the two upgraded connections are spliced together as an opaque byte stream, treated like a
//! proxied TCP connection: the same idle timeout ([`tcp::DEFAULT_IDLE_TIMEOUT`]), its bytes counted
//! in the cluster's TCP byte counters as they move, and a drain guard held for as long as it lives,
//! so a draining proxy waits (up to its drain deadline) for open tunnels as it does for connections.

use std::time::Duration;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::drain::{ConnectionGuard, Watch};
use crate::metrics::{ClusterMetrics, TcpBytes};
use crate::tcp;

/// What a tunnel carries besides its two streams: the drain guard, the byte counters and the idle
/// timeout.
#[derive(Debug)]
pub struct Tunnel {
    guard: ConnectionGuard,
    bytes: TcpBytes,
    idle: Duration,
}

impl Tunnel {
    /// A tunnel counted in `metrics` (the cluster that answered the upgrade) that keeps a draining
    /// proxy waiting while it lives. Made when the upstream answers `101`, while the request's own
    /// connection still holds its guard, so the guard passes on without a gap.
    pub fn new(drain: &Watch, metrics: &ClusterMetrics) -> Self {
        Tunnel { guard: drain.connection(), bytes: metrics.tcp_bytes(), idle: tcp::DEFAULT_IDLE_TIMEOUT }
    }
}

/// Joins the downstream and upstream halves of an upgrade in a background task, as `tunnel` says.
pub fn splice_tunnel(downstream: OnUpgrade, upstream: OnUpgrade, tunnel: Tunnel) {
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(error = %err, "upgrade failed");
                return;
            }
        };
        let (down, up): (TokioIo<Upgraded>, TokioIo<Upgraded>) = (TokioIo::new(down), TokioIo::new(up));
        run(down, up, tunnel).await;
    });
}

/// Copies between the two halves until both directions end, the idle timeout passes or either
/// side fails; the guard is released when it returns.
async fn run<D, U>(mut down: D, mut up: U, tunnel: Tunnel)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let Tunnel { guard, bytes, idle } = tunnel;
    if let Err(err) = tcp::copy_bidirectional_observed(&mut down, &mut up, idle, &bytes).await {
        tracing::debug!(error = %err, "upgraded connection ended with an error");
    }
    drop(guard);
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::drain::Drain;
    use crate::metrics::{Direction, Metrics};

    /// Two connected TCP pairs standing in for the upgraded halves: (client, proxy's downstream
    /// half) and (proxy's upstream half, server).
    async fn pairs() -> ((TcpStream, TcpStream), (TcpStream, TcpStream)) {
        async fn pair() -> (TcpStream, TcpStream) {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let connect = TcpStream::connect(listener.local_addr().expect("addr"));
            let (connected, accepted) = tokio::join!(connect, listener.accept());
            (connected.expect("connect"), accepted.expect("accept").0)
        }
        (pair().await, pair().await)
    }

    #[tokio::test]
    async fn a_tunnel_counts_its_bytes_as_they_move_and_holds_the_drain_until_it_ends() {
        let metrics = Metrics::new();
        let cluster = metrics.cluster(Direction::Gateway, "chat");
        let drain = Drain::new();
        let ((mut client, down), (up, mut server)) = pairs().await;
        let tunnel = Tunnel::new(&drain.watch(), &cluster);
        assert_eq!(drain.open_connections(), 1, "the guard is taken when the tunnel is made");
        let task = tokio::spawn(run(down, up, tunnel));
        client.write_all(b"hello").await.expect("write");
        let mut got = [0u8; 5];
        server.read_exact(&mut got).await.expect("read");
        server.write_all(b"hi there").await.expect("write");
        let mut reply = [0u8; 8];
        client.read_exact(&mut reply).await.expect("read");
        assert_eq!((cluster.tcp_received.get(), cluster.tcp_sent.get()), (5, 8), "counted while open");
        assert_eq!(drain.open_connections(), 1, "a draining proxy waits for the open tunnel");
        client.shutdown().await.expect("shutdown");
        server.shutdown().await.expect("shutdown");
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("tunnel ends").expect("task");
        assert_eq!(drain.open_connections(), 0, "the guard goes with the tunnel");
        assert!(drain.wait_closed(Duration::from_millis(10)).await);
    }

    #[tokio::test]
    async fn an_idle_tunnel_is_closed_after_the_idle_timeout() {
        let drain = Drain::new();
        let metrics = Metrics::new();
        let ((mut client, down), (up, mut server)) = pairs().await;
        let mut tunnel = Tunnel::new(&drain.watch(), &metrics.cluster(Direction::Gateway, "idle"));
        tunnel.idle = Duration::from_millis(200);
        let started = Instant::now();
        let task = tokio::spawn(run(down, up, tunnel));
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the client sees its tunnel closed");
        assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
        let read = tokio::time::timeout(Duration::from_secs(10), server.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "and so does the server");
        task.await.expect("task");
        assert_eq!(drain.open_connections(), 0);
    }
}
