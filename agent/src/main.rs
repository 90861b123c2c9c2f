//! `flotilla-agent`: reads its configuration, binds the portal, runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use flotilla_agent::cli;
use flotilla_agent::config::{Settings, default_config_path};
use flotilla_proto::{logging, service};

/// The Flotilla agent: reports this server's modules to the controller,
/// installs them, and serves the local update portal.
#[derive(Debug, Parser)]
#[command(version = flotilla_agent::VERSION)]
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
        /// The fingerprint of the controller's CA (sha256:…), as the
        /// dashboard shows it with the token.
        #[arg(long)]
        ca_fingerprint: String,
        /// A file holding the one-time enrollment token. Without it, the
        /// token is FLOTILLA_ENROLLMENT_TOKEN, a line piped in, or asked for
        /// on the terminal: never on the command line, where `ps` and the
        /// shell's history would show it.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Join the fleet in one command: enroll (the one-time token from
    /// standard input, FLOTILLA_ENROLLMENT_TOKEN or --token-file, never the
    /// command line), write the configuration with what the controller
    /// says at enrollment, install and start the service. Run again, it
    /// changes nothing that is already right.
    Join {
        /// The controller's HTTPS address (its dashboard's), e.g.
        /// https://controller:7080.
        #[arg(long)]
        controller: String,
        /// The fingerprint of the controller's CA (sha256:…), as the
        /// dashboard shows it with the token.
        #[arg(long)]
        ca_fingerprint: String,
        /// A file holding the one-time enrollment token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The data folder (by default the configuration's, or the
        /// platform's: /var/lib/flotilla, %PROGRAMDATA%\Flotilla).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Write the configuration and enroll, but leave the service alone.
        #[arg(long)]
        no_service: bool,
        /// Linux: where the systemd unit goes.
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
    },
    /// Leave the fleet: stop and remove the service, have the controller
    /// revoke this server's certificate (when it can be reached), set the
    /// identity aside. The configuration and the data folder are kept.
    Leave {
        /// Leave the service alone.
        #[arg(long)]
        no_service: bool,
        /// Linux: where the systemd unit is.
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
    },
    /// Manage the agent's service: on Windows with the service control
    /// manager (Automatic (Delayed Start), restarted after a failure), on
    /// Linux as a systemd unit.
    Service {
        #[command(subcommand)]
        action: service::Command,
        /// Linux: where `install` writes the systemd unit.
        #[arg(long, global = true, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
    },
    /// Check this server as the procedure's troubleshooting does (service,
    /// portal, controller, applicationspath.config, folders' rights,
    /// status.xml, hooks, leftovers, holders, disk, journal, databases), and
    /// say how to fix what fails. Asks the running agent; without it, runs
    /// what it can itself. Exit code: 0 all OK, 1 a warning, 2 a failure.
    Doctor {
        /// Machine output: the report as JSON.
        #[arg(long)]
        json: bool,
        /// The agent's portal, when not the configured address.
        #[arg(long)]
        portal: Option<String>,
    },
    /// Print a one-time link that signs a browser in to the portal, to
    /// install and restore from its pages (run as an administrator: it
    /// reads the portal's local token; the link works once, for ten
    /// minutes).
    PortalLink {
        /// The agent's portal, when not the configured address.
        #[arg(long)]
        portal: Option<String>,
    },
    /// Restore a kept backup of a module through the running agent: the
    /// newest earlier version, or `--to`.
    Rollback {
        module: String,
        #[arg(long)]
        to: Option<String>,
        /// A database module: restore its files only and leave its database
        /// as it is (by default the database goes back to its backup too).
        #[arg(long)]
        keep_database: bool,
        /// The agent's portal, when not the configured address.
        #[arg(long)]
        portal: Option<String>,
    },
}

#[cfg(windows)]
use flotilla_agent::join::SERVICE_NAME;

fn main() -> ExitCode {
    flotilla_proto::tls::install_crypto_provider();
    let args = Args::parse();
    let result = match args.command {
        Some(Command::Service {
            action: service::Command::Run,
            ..
        }) => run_as_service(args.config),
        Some(Command::Service {
            action: service::Command::Manage(action),
            unit_dir,
        }) => manage_service(&args.config, unit_dir, action),
        _ => {
            // A new version on trial under the Windows service logs where
            // the service does: nothing reads its stderr.
            #[cfg(windows)]
            let _flush = flotilla_agent::self_update::on_trial()
                .then(|| flotilla_agent::config::data_layout_of(&args.config).ok())
                .flatten()
                .and_then(|layout| logging::to_files(&layout.root().join("logs"), SERVICE_NAME));
            #[cfg(windows)]
            if _flush.is_none() {
                logging::to_stderr("info");
            }
            #[cfg(not(windows))]
            logging::to_stderr("info");
            tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(run(args)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `service install | uninstall | start | stop | status`.
fn manage_service(config: &Path, unit_dir: PathBuf, action: service::Action) -> anyhow::Result<()> {
    if action == service::Action::Install {
        // Registered only with a configuration that loads.
        Settings::load(config)?;
    }
    let spec = match action {
        service::Action::Install => flotilla_agent::join::installed_service_spec(config, unit_dir)?,
        _ => flotilla_agent::join::service_spec(config, unit_dir)?,
    };
    println!("{}", service::control(&spec, action)?);
    Ok(())
}

/// Under the Windows service control manager: logs go to rolling files in
/// the data folder, START_PENDING until the portal listens, then RUNNING;
/// a stop lets a running install end first.
#[cfg(windows)]
fn run_as_service(config: PathBuf) -> anyhow::Result<()> {
    service::windows::run(SERVICE_NAME, move |scm| {
        let layout = flotilla_agent::config::data_layout_of(&config).map_err(|e| e.to_string())?;
        let _flush = logging::to_files(&layout.root().join("logs"), SERVICE_NAME);
        let outcome = tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| {
                runtime.block_on(async {
                    let settings = Settings::load(&config)?;
                    let ready = scm.clone();
                    serve(&config, settings, scm.stopping(), move || ready.running()).await
                })
            });
        outcome.map_err(|e| {
            tracing::error!("{e:#}");
            format!("{e:#}")
        })
    })?;
    Ok(())
}

#[cfg(not(windows))]
fn run_as_service(_config: PathBuf) -> anyhow::Result<()> {
    anyhow::bail!(
        "`service run` is for the Windows service control manager; systemd runs `flotilla-agent run`"
    )
}

/// The enrollment token `enroll` and `join` use: FLOTILLA_ENROLLMENT_TOKEN,
/// else the file given, else a line on standard input (piped in, or pasted
/// at a prompt on the terminal when `ask`). Never an argument: `ps` and the
/// shell's history would show it.
fn enrollment_token(file: Option<&Path>, ask: bool) -> anyhow::Result<Option<String>> {
    use std::io::{IsTerminal, Write};
    let token = if let Ok(token) = std::env::var("FLOTILLA_ENROLLMENT_TOKEN") {
        token
    } else if let Some(file) = file {
        std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", file.display()))?
    } else if !std::io::stdin().is_terminal() || ask {
        if std::io::stdin().is_terminal() {
            eprint!("Enrollment token (from the dashboard's Agents page): ");
            std::io::stderr().flush()?;
        }
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line
    } else {
        return Ok(None);
    };
    Ok(Some(token.trim().to_owned()).filter(|t| !t.is_empty()))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Command::Enroll {
        controller,
        ca_fingerprint,
        token_file,
    }) = &args.command
    {
        let layout = flotilla_agent::config::data_layout_of(&args.config)?;
        let Some(token) = enrollment_token(token_file.as_deref(), true)? else {
            anyhow::bail!(
                "no enrollment token: give it in FLOTILLA_ENROLLMENT_TOKEN, --token-file or on standard input"
            );
        };
        let identity = &flotilla_agent::identity::enroll(
            &layout.identity_dir(),
            controller,
            &token,
            ca_fingerprint,
        )
        .await?
        .identity;
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
    if let Some(Command::Join {
        controller,
        ca_fingerprint,
        token_file,
        data_dir,
        no_service,
        unit_dir,
    }) = &args.command
    {
        let config = std::path::absolute(&args.config)?;
        let (_, enrolled) = flotilla_agent::join::enrolled(&config, data_dir.as_deref())?;
        let join = flotilla_agent::join::Join {
            controller: controller.clone(),
            ca_fingerprint: ca_fingerprint.clone(),
            token: match enrolled {
                true => None,
                false => enrollment_token(token_file.as_deref(), true)?,
            },
            config,
            data_dir: data_dir.clone(),
            service: !no_service,
            unit_dir: unit_dir.clone(),
        };
        for line in flotilla_agent::join::join(&join).await? {
            println!("{line}");
        }
        return Ok(());
    }
    if let Some(Command::Leave {
        no_service,
        unit_dir,
    }) = &args.command
    {
        let config = std::path::absolute(&args.config)?;
        for line in flotilla_agent::join::leave(&config, !no_service, unit_dir.clone()).await? {
            println!("{line}");
        }
        return Ok(());
    }
    if let Some(Command::Doctor { json, portal }) = &args.command {
        let report = cli::doctor(&args.config, portal.clone()).await;
        if *json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.text());
        }
        std::process::exit(match report.worst() {
            flotilla_proto::doctor::Status::Ok => 0,
            flotilla_proto::doctor::Status::Warn => 1,
            flotilla_proto::doctor::Status::Fail => 2,
        });
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
    if let Some(Command::PortalLink { portal }) = &args.command {
        let token = cli::local_token(&settings.layout)?;
        let link = cli::portal_link(&portal_of(portal.clone()), &token).await?;
        println!("{link}");
        println!("(open it on this server within ten minutes; it works once)");
        return Ok(());
    }
    let (module, portal, request) = match args.command {
        None | Some(Command::Run) => {
            return serve(
                &args.config,
                settings,
                flotilla_proto::process::shutdown_signal(),
                || {},
            )
            .await;
        }
        Some(Command::Enroll { .. })
        | Some(Command::Join { .. })
        | Some(Command::Leave { .. })
        | Some(Command::Service { .. })
        | Some(Command::PortalLink { .. })
        | Some(Command::Doctor { .. }) => {
            unreachable!("handled before")
        }
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
        Some(Command::Rollback {
            module,
            to,
            keep_database,
            portal,
        }) => (
            module,
            portal_of(portal),
            cli::Request::Rollback { to, keep_database },
        ),
    };
    let token = cli::local_token(&settings.layout)?;
    if cli::run(&portal, &token, &module, request).await? {
        Ok(())
    } else {
        anyhow::bail!("the install of {module} failed")
    }
}

/// Runs the agent on `settings` (read from `config`) until `shutdown`;
/// `ready` once its portal listens ([`flotilla_agent::serve`]).
async fn serve(
    config: &Path,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let no_crash_points = std::sync::Arc::new(flotilla_agent::install::NoCrashPoints);
    flotilla_agent::serve(config, settings, no_crash_points, shutdown, ready).await
}
