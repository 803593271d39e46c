//! Protocol upgrades (WebSocket and others): once both sides agreed on `101 Switching Protocols`,
//! the two upgraded connections are spliced together as an opaque byte stream.

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

/// Joins the downstream and upstream halves of an upgrade in a background task.
pub fn splice(downstream: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(error = %err, "upgrade failed");
                return;
            }
        };
        let (mut down, mut up): (TokioIo<Upgraded>, TokioIo<Upgraded>) = (TokioIo::new(down), TokioIo::new(up));
        if let Err(err) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %err, "upgraded connection ended with an error");
        }
    });
}
