//! The dashboard's and the API's connections: accepted within caps (in all,
//! and per source address), over TLS unless `--insecure-plaintext`, a new
//! connection's first request head read within a time limit (and a kept
//! connection's next one within two minutes, longer than clients keep an
//! idle one). A client that opens connections
//! and never finishes a request can hold only a few of them, for seconds,
//! and never the open files the agents' port needs.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kept-alive connection may wait for its next request's head:
/// longer than clients keep an idle connection (reqwest's 90 s), so that
/// the client closes it first and never sends a request into a closing
/// connection.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The caps on the dashboard's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, in all.
    pub connections: usize,
    /// Connections open at once from one source address.
    pub per_source: usize,
    /// How long a new connection has to send its first request's head (its
    /// line and headers).
    pub request_head: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 1024,
            per_source: 256,
            request_head: Duration::from_secs(10),
        }
    }
}

/// The connections open now, in all and by source address.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// A place among the open connections, given back when dropped.
struct Place {
    open: Arc<Mutex<Open>>,
    source: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.by_source.remove(&self.source);
            }
        }
    }
}

/// The network a source address stands for: itself for IPv4, its /64 for
/// IPv6 (one host commonly holds a whole /64, and would otherwise be
/// counted as countless sources).
pub fn network_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// Takes a place for a connection from `source`, unless a cap is reached.
fn admit(open: &Arc<Mutex<Open>>, limits: Limits, source: IpAddr) -> Result<Place, &'static str> {
    let mut state = open.lock().unwrap_or_else(|e| e.into_inner());
    if state.total >= limits.connections {
        return Err("the dashboard's connections are all taken");
    }
    let from_source = state.by_source.entry(source).or_default();
    if *from_source >= limits.per_source {
        return Err("this source has as many connections open as it may");
    }
    *from_source += 1;
    state.total += 1;
    Ok(Place {
        open: open.clone(),
        source,
    })
}

/// Serves `app` on `listener` until `shutdown`, over TLS with `tls`.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<rustls::ServerConfig>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let acceptor = tls.map(|config| tokio_rustls::TlsAcceptor::from(Arc::new(config)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(Mutex::new(Open::default()));
    // Refusals are counted, and said at most once a minute.
    let refused = Arc::new(Mutex::new((0u64, None::<std::time::Instant>)));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("cannot accept an HTTPS connection: {e}");
                    // Out of open files, say: a moment before trying again.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let place = match admit(&open, limits, network_of(peer.ip())) {
            Ok(place) => place,
            Err(why) => {
                drop(tcp);
                let mut refused = refused.lock().unwrap_or_else(|e| e.into_inner());
                refused.0 += 1;
                if refused
                    .1
                    .is_none_or(|last| last.elapsed() >= Duration::from_secs(60))
                {
                    tracing::warn!(source = %peer.ip(), refused = refused.0, "refused a connection: {why}");
                    *refused = (0, Some(std::time::Instant::now()));
                }
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _place = place;
            match acceptor {
                None => serve_connection(tcp, app, peer, limits, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => serve_connection(tls, app, peer, limits, watcher).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake refused: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake not finished in time"),
                    }
                }
            }
        });
    }
    graceful.shutdown().await;
}

/// One connection, HTTP/1.1 or HTTP/2: its first request's head within the
/// limit, then each next one within the idle time.
async fn serve_connection<S>(
    stream: S,
    app: axum::Router,
    peer: SocketAddr,
    limits: Limits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Who is calling, for the audit trail; and whether a request came.
    let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = tower::ServiceExt::map_request(app, {
        let asked = asked.clone();
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            asked.store(true, std::sync::atomic::Ordering::Relaxed);
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            request
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(64);
    let connection =
        builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app));
    let connection = watcher.watch(connection.into_owned());
    // A connection with no request head by the limit is closed (a slow
    // client holding it open); one that asked goes on.
    let first_head = async {
        tokio::time::sleep(limits.request_head).await;
        if asked.load(std::sync::atomic::Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        ended = connection => if let Err(e) = ended {
            tracing::debug!(%peer, "HTTPS connection ended: {e}");
        },
        () = first_head => tracing::debug!(%peer, "no request head in time: connection closed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_in_all_and_per_source() {
        let open = Arc::new(Mutex::new(Open::default()));
        let limits = Limits {
            connections: 3,
            per_source: 2,
            request_head: Duration::from_secs(1),
        };
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let first = admit(&open, limits, a);
        let second = admit(&open, limits, a);
        assert!(first.is_ok() && second.is_ok());
        assert!(admit(&open, limits, a).is_err(), "a third from one source");
        let third = admit(&open, limits, b);
        assert!(third.is_ok());
        assert!(admit(&open, limits, b).is_err(), "a fourth in all");
        drop(first);
        let fourth = admit(&open, limits, b);
        assert!(fourth.is_ok(), "a place given back is taken again");
        drop((second, third));
        let state = open.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(state.total, 1);
        assert!(
            !state.by_source.contains_key(&a),
            "an idle source is forgotten"
        );
        drop(state);
        drop(fourth);
    }
}
