//! Size bounds on the futures a connection keeps for its whole life.

use super::*;
use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::state::Store;
use crate::tls::MeshTls;

fn shared() -> Shared {
    use clap::Parser;
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        serve: crate::settings::ServeArgs,
    }
    let settings =
        Args::parse_from(["test", "--config", "/dev/null"]).serve.settings("sidecar").expect("valid settings");
    Shared {
        store: Arc::new(Store::default()),
        metrics: Arc::new(Metrics::new()),
        clients: http::Clients::new(settings.pool_idle_timeout),
        settings: Arc::new(settings),
        tls: Arc::new(MeshTls::default()),
        drain: Drain::new().watch(),
    }
}

/// Bound on an accepted connection's own task (debug build; about 1 KiB now).
const MAX_CONNECTION_TASK_BYTES: usize = 2048;

#[tokio::test]
async fn an_accepted_connections_task_is_small() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let _client = TcpStream::connect(addr).await.expect("connect");
    let (stream, peer) = listener.accept().await.expect("accept");
    let task = connection(shared(), stream, Context::plain(Side::Outbound, peer, addr));
    let size = std::mem::size_of_val(&task);
    // The task is allocated at accept and kept until close: 64 idle keep-alive connections cost 64 of
    // it. Each way of serving boxes its own state (it was 7.4 KiB with them inline).
    assert!(size <= MAX_CONNECTION_TASK_BYTES, "a connection's task holds {size} bytes from accept to close");
}
