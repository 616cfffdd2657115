//! Raw TCP (L4) mode: each client connection is piped to one instance.
//!
//! The instance is picked when the connection arrives and holds an in-flight
//! slot until the connection closes, so least outstanding is least
//! connections and a drain waits for the instance's connections to close.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::LbConfig;
use crate::io::{ActivityIo, idle_watchdog};
use crate::proxy::Proxy;

pub(crate) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    config: Arc<LbConfig>,
    cancel: CancellationToken,
) {
    let _ = client.set_nodelay(true);
    let Some(mut guard) = proxy.pool.acquire(None) else {
        tracing::debug!(%peer, "no instance ready: closing the connection");
        proxy.traffic.record(None, true);
        return;
    };
    // Nothing has been sent yet, so a failed connect is always retried once.
    let mut retried = false;
    let upstream = loop {
        match tokio::time::timeout(config.connect_timeout, TcpStream::connect(guard.addr())).await {
            Ok(Ok(stream)) => break stream,
            failed => {
                guard.record_failure();
                proxy.outcome(&guard, false);
                let backend = guard.id().to_owned();
                tracing::debug!(%peer, %backend, timed_out = failed.is_err(), "connect to instance failed");
                match (!retried)
                    .then(|| proxy.pool.acquire(Some(&backend)))
                    .flatten()
                {
                    Some(next) => {
                        retried = true;
                        guard = next;
                    }
                    None => {
                        proxy.traffic.record(None, true);
                        return;
                    }
                }
            }
        }
    };
    proxy.outcome(&guard, true);
    proxy.traffic.record(None, false);
    let _ = upstream.set_nodelay(true);
    let (mut client, activity) = ActivityIo::new(client);
    let mut upstream = upstream;
    let idle = idle_watchdog(activity, config.idle_timeout);
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(err) = copied {
                tracing::debug!(%peer, backend = %guard.id(), error = %err, "tcp connection ended with an error");
            }
        }
        () = idle => tracing::debug!(%peer, backend = %guard.id(), "tcp connection idle: closing"),
        () = cancel.cancelled() => {}
    }
    drop(guard);
}
