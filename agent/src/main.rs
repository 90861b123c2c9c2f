//! `flotilla-agent`: reads its configuration, binds the portal, runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use flotilla_agent::cli;
use flotilla_agent::config::{Settings, default_config_path};

/// The Flotilla agent: reports this server's modules to the controller,
/// installs them, and serves the local update portal.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The agent's TOML configuration file.
    #[arg(long, short, global = true, env = "FLOTILLA_AGENT_CONFIG", default_value_os_t = default_config_path())]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the agent service (the default).
    Run,
    /// Install a module through the running agent: its pending package, or
    /// the given one; prints the progress.
    Install {
        module: String,
        /// A package zip on this server, instead of the pending one: copied
        /// into the agent's packages folder (with `<zip>.sig` if present)
        /// and installed only if its signature is trusted.
        #[arg(long, conflicts_with = "sha256")]
        package: Option<PathBuf>,
        /// One of the agent's packages, by its sha256.
        #[arg(long)]
        sha256: Option<String>,
        /// The agent's portal, when not the configured address.
        #[arg(long)]
        portal: Option<String>,
    },
    /// Enroll this agent with the controller: makes its key here (it never
    /// leaves this server) and gets a certificate for the server id and
    /// site an admin created the token for.
    Enroll {
        /// The controller's HTTPS address (its dashboard), e.g.
        /// https://controller:8443.
        #[arg(long)]
        controller: String,
        /// The one-time enrollment token.
        #[arg(long, env = "FLOTILLA_ENROLLMENT_TOKEN")]
        token: String,
        /// The fingerprint of the controller's CA (sha256:…), as the
        /// dashboard shows it with the token.
        #[arg(long)]
        ca_fingerprint: String,
    },
    /// Restore a kept backup of a module through the running agent: the
    /// newest earlier version, or `--to`.
    Rollback {
        module: String,
        #[arg(long)]
        to: Option<String>,
        /// The agent's portal, when not the configured address.
        #[arg(long)]
        portal: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    flotilla_proto::tls::install_crypto_provider();
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
    if let Some(Command::Enroll {
        controller,
        token,
        ca_fingerprint,
    }) = &args.command
    {
        let layout = flotilla_agent::config::data_layout_of(&args.config)?;
        let identity = flotilla_agent::identity::enroll(
            &layout.identity_dir(),
            controller,
            token,
            ca_fingerprint,
        )
        .await?;
        let not_after = chrono::DateTime::from_timestamp(identity.certificate.not_after, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        println!(
            "flotilla-agent enrolled as {}; certificate valid until {not_after}, renewed automatically; identity in {}",
            identity.certificate.identity,
            layout.identity_file().display()
        );
        return Ok(());
    }
    let settings = Settings::load(&args.config)?;
    let portal_of = |given: Option<String>| {
        given.unwrap_or_else(|| {
            let mut address = settings.portal_listen;
            if address.ip().is_unspecified() {
                address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{address}")
        })
    };
    let (module, portal, request) = match args.command {
        None | Some(Command::Run) => return serve(settings).await,
        Some(Command::Enroll { .. }) => unreachable!("handled above"),
        Some(Command::Install {
            module,
            package,
            sha256,
            portal,
        }) => {
            let sha256 = match package {
                Some(file) => Some(cli::stage(&settings.layout.packages_dir(), &file)?),
                None => sha256,
            };
            (module, portal_of(portal), cli::Request::Install { sha256 })
        }
        Some(Command::Rollback { module, to, portal }) => {
            (module, portal_of(portal), cli::Request::Rollback { to })
        }
    };
    if cli::run(&portal, &module, request).await? {
        Ok(())
    } else {
        anyhow::bail!("the install of {module} failed")
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
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
    flotilla_agent::run(
        settings,
        listener,
        no_crash_points,
        flotilla_proto::process::shutdown_signal(),
    )
    .await
}
