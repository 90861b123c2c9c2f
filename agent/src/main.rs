//! `flotilla-agent`: reads its configuration, binds the portal, runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use flotilla_agent::config::{Settings, default_config_path};

/// The Flotilla agent: reports this server's modules to the controller and
/// serves the local update portal.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The agent's TOML configuration file.
    #[arg(long, short, env = "FLOTILLA_AGENT_CONFIG", default_value_os_t = default_config_path())]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let settings = Settings::load(&args.config)?;
    let listener = tokio::net::TcpListener::bind(settings.portal_listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} for the local portal: {e}",
                settings.portal_listen
            )
        })?;
    let portal = listener.local_addr()?;
    tracing::info!(
        server = %settings.server_id,
        site = %settings.site,
        data = %settings.layout.root().display(),
        "agent starting"
    );
    // The one line a person (or a test) needs: where the portal is.
    println!(
        "flotilla-agent {} portal: http://{portal}/",
        settings.server_id
    );
    let no_crash_points = std::sync::Arc::new(flotilla_agent::install::NoCrashPoints);
    flotilla_agent::run(settings, listener, no_crash_points, shutdown_signal()).await
}

/// Resolves on Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
