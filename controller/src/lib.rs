//! The Flotilla controller: the fleet's single point of truth.
//!
//! Layout:
//! - [`db`]: every SQL statement, against SQLite (WAL) with the migrations
//!   in `migrations/`.
//! - [`fleet`]: who is connected now, heartbeats, offline detection, and the
//!   change events that feed live views.
//! - [`grpc`]: the agents' endpoint, one bidirectional stream per agent; the
//!   only module that sees wire types.
//! - [`api`]: the REST API under `/api/v1`, one file per area, its OpenAPI
//!   document, the gate in front of it, the event stream.
//! - [`states`]: the states of rollouts, sites and steps.
//! - [`releases`]: the content-addressed package store.
//! - [`rollouts`]: a release brought to sites with a strategy; its pure
//!   decisions, and the engine that runs them from their state in SQLite.
//! - [`dashboard`]: the web pages from `web/`, embedded.
//! - [`demo`]: the README's one-command demo (a controller and three agents).
//! - [`tls`]: the controller's TLS identity (its own CA, or the operator's
//!   certificates) and the HTTPS server.
//!
//! [`run`] serves both endpoints on the [`Controller`]'s already-bound listeners until the
//! shutdown future resolves; `main` only parses arguments, opens the database
//! and binds.

pub mod api;
pub mod audit;
pub mod auth;
pub mod cluster;
pub mod dashboard;
pub mod db;
pub mod demo;
pub mod enrollment;
pub mod fleet;
pub mod grpc;
pub mod oidc;
pub mod openapi;
pub mod publisher;
pub mod releases;
pub mod rollouts;
pub mod serving;
pub mod states;
pub mod throttle;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::db::Database;
use crate::fleet::{Fleet, Heartbeats};

/// How long shutdown waits for connections to finish before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How the controller serves, beyond its listeners.
#[derive(Debug, Clone)]
pub struct Settings {
    pub heartbeats: Heartbeats,
    /// This controller's HTTP(S) address as agents reach it (download URLs);
    /// the HTTP listener's address by default.
    pub public_url: Option<String>,
    /// The certificate both endpoints serve; `None` only with
    /// `--insecure-plaintext`.
    pub tls: Option<tls::Identity>,
    /// The host names the dashboard and API answer to (with the public
    /// URL's); a request for any other is refused (DNS rebinding).
    pub names: Vec<String>,
    /// The hosts packages published by URL may be fetched from (HTTPS
    /// only), besides the public URL's.
    pub package_hosts: Vec<String>,
    /// The hosts rollouts' notice webhooks may be posted to (HTTPS only).
    pub webhook_hosts: Vec<String>,
    /// The CA that issues agents' certificates (the controller's own, in
    /// its TLS folder); `None` only with `--insecure-plaintext`.
    pub agent_ca: Option<Arc<tls::AgentCa>>,
    /// How long an agent's certificate is valid; agents renew it when a
    /// third of that is left.
    pub agent_certificate_lifetime: Duration,
    /// Where agents connect, as they reach it (told at enrollment); this
    /// controller's public host on its gRPC port when empty.
    pub agents_urls: Vec<String>,
    /// The publisher keys agents trust packages from (told at enrollment).
    pub publisher_keys: Vec<String>,
    /// How long the audit trail keeps its entries; `None`: for ever.
    pub audit: Option<audit::Retention>,
    /// The file holding the first admin's password until it is changed.
    pub initial_password: Option<std::path::PathBuf>,
    /// The caps on the dashboard's connections.
    pub http_limits: serving::Limits,
}

/// Everything a controller serves from: its database, its package store,
/// its settings, and its two bound listeners.
#[derive(Debug)]
pub struct Controller {
    pub db: Database,
    pub packages: releases::PackageStore,
    pub settings: Settings,
    /// The agents' gRPC endpoint.
    pub grpc: TcpListener,
    /// The dashboard and the REST API.
    pub http: TcpListener,
}

/// The open-files limit below which the controller warns at start: room
/// for 20,000 agents.
const OPEN_FILES_WANTED: u64 = 20_480;

/// This process's soft limit on open files (Linux: `/proc/self/limits`).
fn open_files_limit() -> Option<u64> {
    parse_open_files(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The soft limit of `Max open files` in the text of `/proc/<pid>/limits`.
fn parse_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        number => number.parse().ok(),
    }
}

/// What a starting controller says and sets right before it serves: the
/// open-files limit, plain text, and servers left online by its last run.
async fn starting(db: &Database, tls: bool) -> anyhow::Result<()> {
    // Each agent holds a connection, and each connection a file.
    if let Some(limit) = open_files_limit().filter(|&l| l < OPEN_FILES_WANTED) {
        tracing::warn!(
            limit,
            "the open-files limit is {limit}: about that many agents can connect at once, and beyond it new connections fail; raise it (LimitNOFILE= in the service's unit, `ulimit -n` by hand)"
        );
    }
    if !tls {
        tracing::warn!(
            "--insecure-plaintext: agents, the dashboard and the API are served in plain text; anyone on the network can read and change what they say"
        );
    }
    // Alone on its database, a starting controller has no agent yet. With
    // others on it, their agents are connected: those of a controller that
    // died are found silent by the check (`Fleet::reconcile`).
    if !db.shared() {
        let offline = db.mark_all_offline("the controller restarted").await?;
        if offline > 0 {
            tracing::info!("{offline} servers marked offline until their agents reconnect");
        }
    }
    Ok(())
}

/// Serves the agents' gRPC endpoint and the dashboard and REST API until
/// `shutdown` resolves: over TLS, unless `settings.tls` is `None`.
pub async fn run(
    controller: Controller,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    flotilla_proto::tls::install_crypto_provider();
    let Controller {
        db,
        packages,
        settings,
        grpc,
        http,
    } = controller;
    let Settings {
        heartbeats,
        public_url,
        tls,
        mut names,
        mut package_hosts,
        webhook_hosts,
        agent_ca,
        agent_certificate_lifetime,
        agents_urls,
        publisher_keys,
        audit,
        initial_password,
        http_limits,
    } = settings;
    starting(&db, tls.is_some()).await?;
    let public_url = match public_url {
        Some(url) => url,
        None => {
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}", http.local_addr()?)
        }
    };
    // The public URL's host is one of ours, for the dashboard; its host and
    // port for packages.
    if let Ok(url) = reqwest::Url::parse(&public_url)
        && let Some(host) = url.host_str()
    {
        names.push(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        );
        package_hosts.push(match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        });
    }
    let last_session = db.last_session().await?;
    let fleet = Arc::new(Fleet::new(db, heartbeats, public_url, last_session));
    let stop = CancellationToken::new();

    let refusals = Arc::new(audit::Refusals::default());
    let housekeeping = tokio::spawn({
        let fleet = fleet.clone();
        let stop = stop.clone();
        let refusals = refusals.clone();
        async move {
            let retention = async {
                if let Some(retention) = &audit {
                    retention.run(&fleet.db, stop.clone()).await;
                }
            };
            tokio::join!(
                fleet.housekeeping(stop.clone()),
                refusals.run(&fleet.db, stop.clone()),
                retention
            );
        }
    });

    // Webhook servers are trusted through the system's roots, or this
    // controller's own CA.
    let (rollouts, rollout_engine) = rollouts::Rollouts::start(
        fleet.clone(),
        tls.as_ref().map(|identity| identity.ca_pem.clone()),
        stop.clone(),
    );
    let joining = enrollment::Joining {
        agents_urls: match agents_urls.is_empty() {
            false => agents_urls,
            true => vec![agents_url(&fleet.public_url, grpc.local_addr()?.port())],
        },
        publisher_keys,
    };
    let enrollment = enrollment(
        &fleet,
        tls.as_ref(),
        agent_ca,
        agent_certificate_lifetime,
        joining,
    )
    .await?;
    // With other controllers on the same database: what they relay here.
    let cluster = cluster::start(
        fleet.clone(),
        rollouts.clone(),
        enrollment
            .as_ref()
            .map(|(enrollment, _)| enrollment.clone()),
        stop.clone(),
    );
    let grpc_task = tokio::spawn(grpc::serve(
        grpc,
        fleet.clone(),
        enrollment.clone(),
        stop.clone(),
    ));

    let api = api::ApiState {
        fleet: fleet.clone(),
        packages: Arc::new(packages),
        rollouts,
        shutdown: stop.clone(),
        tls: tls.is_some(),
        package_hosts: Arc::new(package_hosts),
        webhook_hosts: Arc::new(webhook_hosts),
        enrollment: enrollment.map(|(enrollment, _)| enrollment),
        refusals,
        throttle: Arc::default(),
        initial_password: initial_password.map(Arc::new),
    };
    let app = dashboard::router()
        .merge(api::router(api))
        .route("/api/{*rest}", axum::routing::any(api::not_found))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(names),
            dashboard::guard,
        ));
    let http_task = serve_http(http, app, tls.as_ref(), http_limits, stop.clone())?;

    shutdown.await;
    tracing::info!("shutting down");
    stop.cancel();
    let tasks = async {
        let (grpc, http, housekeeping, engine) =
            tokio::join!(grpc_task, http_task, housekeeping, rollout_engine);
        grpc??;
        http??;
        housekeeping?;
        engine?;
        if let Some(cluster) = cluster {
            cluster.await?;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(SHUTDOWN_GRACE, tasks).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; stopping anyway");
            Ok(())
        }
    }
}

/// Agents' identities, with the gRPC endpoint's mutual TLS: over TLS,
/// the CA that issues agents' certificates is required; in plain text
/// there is none.
/// The agents' address when none is configured: the public URL's host on
/// the gRPC port (`https://controller.acme.local:7000`).
fn agents_url(public_url: &str, grpc_port: u16) -> String {
    let (scheme, rest) = public_url
        .split_once("://")
        .unwrap_or(("https", public_url));
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or(v6)),
        None => authority.split(':').next().unwrap_or(authority).to_owned(),
    };
    format!("{scheme}://{host}:{grpc_port}")
}

async fn enrollment(
    fleet: &Fleet,
    tls: Option<&tls::Identity>,
    agent_ca: Option<Arc<tls::AgentCa>>,
    lifetime: Duration,
    joining: enrollment::Joining,
) -> anyhow::Result<Option<(Arc<enrollment::Enrollment>, rustls::ServerConfig)>> {
    match (tls, agent_ca) {
        (Some(identity), Some(ca)) => {
            let config = ca.grpc_config(identity)?;
            let enrollment = enrollment::Enrollment::new(
                &fleet.db,
                ca,
                identity.ca_pem.clone(),
                identity.ca_fingerprint.clone(),
                lifetime,
                joining,
            )
            .await?;
            Ok(Some((Arc::new(enrollment), config)))
        }
        (Some(_), None) => anyhow::bail!("TLS needs the CA that issues agents' certificates"),
        (None, _) => Ok(None),
    }
}

/// The dashboard and the API until `stop`, over TLS with `tls`, within
/// `limits`.
fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<&tls::Identity>,
    limits: serving::Limits,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let config = tls.map(tls::Identity::server_config).transpose()?;
    Ok(tokio::spawn(async move {
        serving::serve(listener, app, config, limits, stop).await;
        Ok(())
    }))
}

#[cfg(test)]
mod limit_tests {
    #[test]
    fn the_open_files_limit_is_read_from_the_kernels_table() {
        let table = "Limit                     Soft Limit           Hard Limit           Units     \n\
                     Max processes             95617                95617                processes \n\
                     Max open files            1024                 1048576              files     \n";
        assert_eq!(super::parse_open_files(table), Some(1024));
        assert_eq!(
            super::parse_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            Some(u64::MAX)
        );
        assert_eq!(super::parse_open_files("nothing"), None);
        if cfg!(target_os = "linux") {
            assert!(super::open_files_limit().is_some());
        }
    }
}

#[cfg(test)]
mod agents_url_tests {
    #[test]
    fn the_agents_address_is_the_public_host_on_the_grpc_port() {
        for (public, agents) in [
            (
                "https://controller.acme.local:7080",
                "https://controller.acme.local:7000",
            ),
            (
                "https://controller.acme.local/",
                "https://controller.acme.local:7000",
            ),
            ("https://127.0.0.1:7080", "https://127.0.0.1:7000"),
            ("https://[::1]:7080", "https://[::1]:7000"),
            ("http://ctl:80", "http://ctl:7000"),
        ] {
            assert_eq!(super::agents_url(public, 7000), agents, "{public}");
        }
    }
}
