//! `flotilla-controller`: parses arguments, opens the database, binds, runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use flotilla_controller::db::{Database, Location};
use flotilla_controller::fleet::Heartbeats;
use flotilla_controller::publisher;
use flotilla_proto::service;
use tokio::net::TcpListener;

mod tls_args;
use tls_args::TlsArgs;

/// The Flotilla controller: the agents' endpoint, the fleet database, the
/// dashboard and the REST API.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller (the default).
    Serve(Box<ServeArgs>),
    /// Start a demo: a controller on a fresh SQLite file and three agents
    /// laid out like a customer site. Ctrl-C stops everything.
    Demo(flotilla_controller::demo::DemoArgs),
    /// Make an Ed25519 publisher key pair: <OUT>.key (secret) and <OUT>.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Build or sign module packages.
    #[command(subcommand)]
    Package(PackageCommand),
    /// Publish releases.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// API tokens, made on the controller's own machine by its owner (who
    /// can read its database): `flotilla-controller --db … token create
    /// --role publisher --name ci` prints the token once.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the controller's service: a systemd unit on Linux, a service
    /// on Windows. `flotilla-controller [serve options] service install`
    /// registers it to run `serve` with those options.
    Service {
        #[command(subcommand)]
        action: service::Command,
        /// Linux: where `install` writes the systemd unit.
        #[arg(long, global = true, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
    },
}

/// The service's stable name, for `sc.exe` and `systemctl`.
const SERVICE_NAME: &str = "flotilla-controller";

#[derive(Debug, Subcommand)]
enum PackageCommand {
    /// Build a package from a folder (writes <OUT>, <OUT>.sha256, and <OUT>.sig with --key).
    Build(Box<BuildArgs>),
    /// Sign a package (writes <PACKAGE>.sig).
    Sign {
        #[arg(long)]
        key: PathBuf,
        package: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    #[arg(long)]
    module: String,
    #[arg(long)]
    version: String,
    /// web, service, database, or agent (the module flotilla-agent: its
    /// executable in --from, with --platform).
    #[arg(long, default_value = "web")]
    kind: String,
    /// An agent package's platform: linux-x86_64, windows-x86_64.
    #[arg(long)]
    platform: Option<String>,
    /// The module's files.
    #[arg(long)]
    from: PathBuf,
    /// Paths carried over from the installed version (repeatable).
    #[arg(long)]
    preserve: Vec<String>,
    /// A URL that must answer 2xx once the module is back in service.
    #[arg(long)]
    health_url: Option<String>,
    /// The package to write; defaults to <module>-<version>.zip.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Sign it with this secret key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// A database package's upgrade scripts: every file of this folder, run in name order.
    #[arg(long)]
    scripts: Option<PathBuf>,
    /// A database package's engine (postgres or sqlite): the package then
    /// carries the standard schemas of --from-version and of this version,
    /// computed on a scratch database.
    #[arg(long, requires_all = ["baseline", "from_version", "scripts"])]
    engine: Option<String>,
    /// The standard schema of --from-version, as one SQL script.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// The version the scripts upgrade from.
    #[arg(long)]
    from_version: Option<String>,
    /// PostgreSQL: a server for the scratch database
    /// (postgres://user@host:port/postgres; the user may create databases).
    #[arg(long, env = "FLOTILLA_SCRATCH_URL")]
    scratch_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API token and print it (shown this once).
    Create {
        /// viewer, operator, publisher or admin.
        #[arg(long)]
        role: String,
        /// Its name, as the audit trail shows who acted.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ReleaseCommand {
    /// Upload signed packages and publish them as a release.
    Publish {
        /// The controller, e.g. https://controller:7080.
        #[arg(long, env = "FLOTILLA_SERVER")]
        server: String,
        /// The controller's CA certificate (its ca.pem), when the system
        /// does not trust it.
        #[arg(long, env = "FLOTILLA_CA")]
        ca: Option<PathBuf>,
        /// An API token with the publisher (or admin) role.
        #[arg(long, env = "FLOTILLA_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long)]
        version: String,
        /// A Markdown file with the release notes.
        #[arg(long)]
        notes: Option<PathBuf>,
        #[arg(required = true)]
        packages: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The database: a SQLite file (created if missing; a path or
    /// `sqlite:PATH`), or a PostgreSQL database (`postgres://user@host/db`,
    /// the password in `PGPASSWORD` or the URL) for large fleets and several
    /// controllers.
    #[arg(long, env = "FLOTILLA_DB", hide_env_values = true)]
    db: Option<String>,
    /// Where package files are stored; defaults to a `packages` folder
    /// beside a SQLite database (required with PostgreSQL).
    #[arg(long, env = "FLOTILLA_PACKAGES")]
    packages: Option<PathBuf>,
    /// Days the audit trail keeps its entries; older ones are exported to
    /// a file in --audit-archive, then pruned, once a day. 0 keeps them
    /// for ever.
    #[arg(long, env = "FLOTILLA_AUDIT_RETENTION_DAYS", default_value_t = 400,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    audit_retention_days: u32,
    /// Where audit entries past their retention are exported before they
    /// are pruned; defaults to an `audit-archive` folder beside the
    /// packages' folder.
    #[arg(long, env = "FLOTILLA_AUDIT_ARCHIVE")]
    audit_archive: Option<PathBuf>,
    /// Where agents connect (gRPC).
    #[arg(long, env = "FLOTILLA_GRPC_LISTEN", default_value = "0.0.0.0:7000")]
    grpc_listen: SocketAddr,
    /// Where the dashboard and the REST API are served.
    #[arg(long, env = "FLOTILLA_HTTP_LISTEN", default_value = "127.0.0.1:7080")]
    http_listen: SocketAddr,
    /// This controller's HTTP address as agents reach it (download URLs);
    /// defaults to the address it listens on.
    #[arg(long, env = "FLOTILLA_PUBLIC_URL")]
    public_url: Option<String>,
    /// Where agents connect, as they reach it (repeatable, or
    /// comma-separated): what `flotilla-agent join` learns at enrollment;
    /// the public URL's host on the gRPC port by default.
    #[arg(
        long = "agents-url",
        env = "FLOTILLA_AGENTS_URL",
        value_delimiter = ','
    )]
    agents_urls: Vec<String>,
    /// A publisher key (Ed25519, hex, as `package keygen` prints it) agents
    /// trust packages from (repeatable, or comma-separated): what
    /// `flotilla-agent join` writes as its trusted_keys.
    #[arg(
        long = "publisher-key",
        env = "FLOTILLA_PUBLISHER_KEYS",
        value_delimiter = ',',
        value_parser = publisher_key
    )]
    publisher_keys: Vec<String>,
    /// How often agents send a heartbeat, in milliseconds.
    #[arg(long, env = "FLOTILLA_HEARTBEAT_INTERVAL_MS", default_value_t = 10_000)]
    heartbeat_interval_ms: u64,
    /// How long an agent may stay silent before it is shown offline, in milliseconds.
    #[arg(long, env = "FLOTILLA_HEARTBEAT_TIMEOUT_MS", default_value_t = 30_000)]
    heartbeat_timeout_ms: u64,
    #[command(flatten)]
    tls: TlsArgs,
    /// A file holding an API token (32 characters or more) to register as
    /// an admin token named "bootstrap", for automation that sets the
    /// controller up; readable by the controller's owner only. No admin
    /// password is made (nor printed) then: accounts are made with it.
    #[arg(long, env = "FLOTILLA_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// A host that packages published by URL may be fetched from, over
    /// HTTPS (repeatable, or comma-separated); the public URL's host always may.
    #[arg(
        long = "package-host",
        env = "FLOTILLA_PACKAGE_HOSTS",
        value_delimiter = ','
    )]
    package_hosts: Vec<String>,
    /// A host that rollouts' notice webhooks may be posted to, over HTTPS
    /// (repeatable, or comma-separated); none by default.
    #[arg(
        long = "webhook-host",
        env = "FLOTILLA_WEBHOOK_HOSTS",
        value_delimiter = ','
    )]
    webhook_hosts: Vec<String>,
    /// Connections the dashboard's port keeps open at once, in all: the
    /// open files beyond them stay the agents'.
    #[arg(long, env = "FLOTILLA_HTTP_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    http_connections: u32,
    /// Connections the dashboard's port keeps open at once from one source
    /// address, an IPv6 /64 counted as one (a proxy in front, or a site's
    /// agents downloading through one NAT, count as one).
    #[arg(long, env = "FLOTILLA_HTTP_CONNECTIONS_PER_SOURCE", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    http_connections_per_source: u32,
    /// Seconds a new connection to the dashboard's port has to send its
    /// first request's head (its line and headers) before it is closed.
    #[arg(long, env = "FLOTILLA_REQUEST_HEAD_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    request_head_seconds: u64,
}

impl ServeArgs {
    /// The database `--db` names (read here, not by clap, whose errors
    /// would show a PostgreSQL URL whole, password included).
    fn location(&self) -> anyhow::Result<Location> {
        match &self.db {
            None => Ok(Location::Sqlite(default_database())),
            Some(text) => text.parse().map_err(|e| anyhow::anyhow!("--db: {e}")),
        }
    }
}

/// The folder `name` beside a SQLite database, the default of the option
/// `flag`; a PostgreSQL database has no "beside", so the option is needed.
/// A publisher's public key, as the hex `keygen` writes in its `.pub`.
fn publisher_key(text: &str) -> Result<String, String> {
    let key = text.trim();
    flotilla_proto::signing::PublicKey::from_hex(key)
        .map(|_| key.to_owned())
        .map_err(|e| format!("\"{key}\": {e}"))
}

fn beside_database(db: &Location, name: &str, flag: &str) -> anyhow::Result<PathBuf> {
    match db {
        Location::Sqlite(path) => Ok(path
            .parent()
            .map(|p| p.join(name))
            .unwrap_or_else(|| PathBuf::from(name))),
        Location::Postgres(_) => anyhow::bail!(
            "with a PostgreSQL database, give {flag} (it defaults to a folder beside a SQLite database)"
        ),
    }
}

fn default_database() -> PathBuf {
    if cfg!(windows) {
        let program_data =
            std::env::var_os("PROGRAMDATA").unwrap_or_else(|| r"C:\ProgramData".into());
        PathBuf::from(program_data)
            .join("Flotilla")
            .join("controller.db")
    } else {
        PathBuf::from("/var/lib/flotilla/controller.db")
    }
}

fn main() -> ExitCode {
    flotilla_proto::tls::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Service {
            action: service::Command::Run,
            ..
        }) => run_as_service(cli.serve),
        Some(Command::Service {
            action: service::Command::Manage(action),
            unit_dir,
        }) => manage_service(&cli.serve, unit_dir, action),
        _ => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(run(cli))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let default_filter = match cli.command {
        None | Some(Command::Serve(_)) => "info",
        _ => "warn",
    };
    flotilla_proto::logging::to_stderr(default_filter);
    match cli.command {
        Some(Command::Demo(args)) => {
            flotilla_controller::demo::run(args, flotilla_proto::process::shutdown_signal()).await
        }
        Some(Command::Keygen { out }) => publisher::keygen(&out).map(|id| {
            println!(
                "key {id}: {}.key (secret) and {}.pub",
                out.display(),
                out.display()
            )
        }),
        Some(Command::Package(command)) => package(command).await,
        Some(Command::Release(ReleaseCommand::Publish {
            server,
            ca,
            token,
            version,
            notes,
            packages,
        })) => {
            let target = publisher::Target {
                server: &server,
                ca: ca.as_deref(),
                token: &token,
            };
            release(&target, &version, notes.as_deref(), &packages).await
        }
        Some(Command::Token(TokenCommand::Create { role, name })) => {
            let role = flotilla_controller::auth::Role::parse(&role).with_context(|| {
                format!("--role {role}: one of viewer, operator, publisher, admin")
            })?;
            let db = Database::connect(&cli.serve.location()?).await?;
            let by = format!(
                "flotilla-controller token create (on {})",
                tls_args::gethostname().unwrap_or_else(|| "this machine".to_owned())
            );
            let token = flotilla_controller::auth::create_token(&db, &name, role, &by).await?;
            println!("{token}");
            eprintln!(
                "API token {name} ({}) created; shown this once: keep it where its user reads it (FLOTILLA_TOKEN)",
                role.as_str()
            );
            Ok(())
        }
        Some(Command::Serve(args)) => {
            serve(*args, flotilla_proto::process::shutdown_signal(), || {}).await
        }
        None => serve(cli.serve, flotilla_proto::process::shutdown_signal(), || {}).await,
        Some(Command::Service { .. }) => unreachable!("handled before"),
    }
}

/// `[serve options] service install | uninstall | start | stop | status`:
/// the service runs `serve` with the options given before `service`.
fn manage_service(
    serve: &ServeArgs,
    unit_dir: PathBuf,
    action: service::Action,
) -> anyhow::Result<()> {
    let options: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .take_while(|arg| arg != "service")
        .collect();
    let db = serve.location()?;
    // A password in the command line would be in the unit or the service's
    // registry entry, readable by anyone who can list services.
    if action == service::Action::Install && db.has_password() {
        anyhow::bail!(
            "--db {db} carries a password: a service's command line is readable by others; give the password in PGPASSWORD or a .pgpass file of the service's account instead"
        );
    }
    let database_file = match &db {
        Location::Sqlite(path) => Some(path.clone()),
        Location::Postgres(_) => None,
    };
    let mut paths: Vec<PathBuf> = database_file.iter().cloned().collect();
    paths.extend(serve.packages.clone());
    paths.extend(serve.tls.tls_dir.clone());
    if action == service::Action::Install
        && let Some(relative) = paths.iter().find(|p| !p.is_absolute())
    {
        anyhow::bail!(
            "{} is relative: give the service absolute paths (--db, --packages, --tls-dir); it does not start in this folder",
            relative.display()
        );
    }
    let mut arguments = if cfg!(windows) {
        options.clone()
    } else {
        vec!["serve".into()]
    };
    if cfg!(windows) {
        arguments.extend(["service".into(), "run".into()]);
    } else {
        arguments.extend(options);
    }
    let spec = service::Spec {
        name: SERVICE_NAME,
        display_name: "Flotilla controller",
        description: "The Flotilla fleet controller: the agents' endpoint, the fleet database, the dashboard and the REST API.",
        executable: std::env::current_exe()?,
        arguments,
        // A SQLite database's folder holds its journal, and by default the
        // packages and TLS folders.
        unit_extra: unit_hardening(
            &paths
                .iter()
                .map(|p| match (&database_file, p.parent()) {
                    (Some(file), Some(folder)) if file == p => folder.to_path_buf(),
                    _ => p.clone(),
                })
                .collect::<Vec<_>>(),
        ),
        unit_dir,
    };
    println!("{}", service::control(&spec, action)?);
    Ok(())
}

/// The controller's unit: it writes only its database, packages and TLS
/// folders, and needs nothing else of the machine.
fn unit_hardening(writable: &[PathBuf]) -> String {
    let paths: Vec<String> = writable
        .iter()
        .map(|p| format!("-{}", p.display()))
        .collect();
    format!(
        "TimeoutStopSec=60s
# Each agent holds a connection: raise the open-files limit with the fleet.
LimitNOFILE=262144
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
",
        paths.join(" ")
    )
}

/// Under the Windows service control manager: logs in a `logs` folder
/// beside the database, RUNNING once it listens, stopped cleanly on a stop.
/// (Its first start's admin password is in the file it names, beside the
/// packages' folder, readable by its account only.)
#[cfg(windows)]
fn run_as_service(args: ServeArgs) -> anyhow::Result<()> {
    service::windows::run(SERVICE_NAME, move |scm| {
        let logs = args
            .location()
            .and_then(|db| beside_database(&db, "logs", ""))
            .unwrap_or_else(|_| default_database().with_file_name("logs"));
        let _flush = flotilla_proto::logging::to_files(&logs, SERVICE_NAME);
        let ready = scm.clone();
        tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| {
                runtime.block_on(serve(args, scm.stopping(), move || ready.running()))
            })
            .map_err(|e| {
                tracing::error!("{e:#}");
                format!("{e:#}")
            })
    })?;
    Ok(())
}

#[cfg(not(windows))]
fn run_as_service(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "`service run` is for the Windows service control manager; systemd runs `flotilla-controller serve`"
    )
}

async fn package(command: PackageCommand) -> anyhow::Result<()> {
    match command {
        PackageCommand::Build(args) => {
            let BuildArgs {
                module,
                version,
                kind,
                from,
                preserve,
                health_url,
                out,
                key,
                scripts,
                engine,
                baseline,
                from_version,
                scratch_url,
                platform,
            } = *args;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{module}-{version}.zip")));
            let database = match (engine, baseline, from_version) {
                (Some(engine), Some(baseline), Some(from_version)) => {
                    let engine = match engine.as_str() {
                        "postgres" => flotilla_proto::database::Engine::Postgres,
                        "sqlite" => flotilla_proto::database::Engine::Sqlite,
                        other => anyhow::bail!("--engine: \"{other}\" is not postgres or sqlite"),
                    };
                    Some(publisher::DatabaseBuild {
                        engine,
                        baseline,
                        from_version,
                        scratch_url,
                    })
                }
                _ => None,
            };
            let request = publisher::BuildRequest {
                module,
                version,
                kind,
                from,
                preserve,
                health_url,
                out: out.clone(),
                key,
                scripts,
                database,
                platform,
            };
            let sha256 = publisher::build_package(&request).await?;
            println!("{} sha256 {sha256}", out.display());
        }
        PackageCommand::Sign { key, package } => {
            let id = publisher::sign(&key, &package)?;
            println!("{}.sig signed with key {id}", package.display());
        }
    }
    Ok(())
}

async fn release(
    target: &publisher::Target<'_>,
    version: &str,
    notes: Option<&std::path::Path>,
    packages: &[PathBuf],
) -> anyhow::Result<()> {
    let notes = match notes {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => String::new(),
    };
    let answer = publisher::publish(target, version, &notes, packages).await?;
    let verb = if answer["created"] == true {
        "published"
    } else {
        "already published, unchanged"
    };
    println!("release {version} {verb}");
    for package in answer["release"]["packages"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "  {} {} sha256 {}",
            package["module"].as_str().unwrap_or("?"),
            package["version"].as_str().unwrap_or("?"),
            package["sha256"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// Runs the controller until `shutdown`; `ready` once it listens.
async fn serve(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let heartbeats = Heartbeats {
        interval: Duration::from_millis(args.heartbeat_interval_ms),
        timeout: Duration::from_millis(args.heartbeat_timeout_ms),
    };
    anyhow::ensure!(
        args.heartbeat_interval_ms > 0 && heartbeats.timeout > heartbeats.interval,
        "--heartbeat-timeout-ms ({}) must be greater than --heartbeat-interval-ms ({}), which must be positive",
        args.heartbeat_timeout_ms,
        args.heartbeat_interval_ms
    );
    let location = args.location()?;
    let packages_dir = match &args.packages {
        Some(dir) => dir.clone(),
        None => beside_database(&location, "packages", "--packages")?,
    };
    let db = Database::connect(&location).await?;
    let packages = flotilla_controller::releases::PackageStore::open(packages_dir.clone())
        .with_context(|| format!("cannot open the package store {}", packages_dir.display()))?;
    let grpc = TcpListener::bind(args.grpc_listen)
        .await
        .with_context(|| format!("cannot listen on {} for agents", args.grpc_listen))?;
    let http = TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} for the dashboard", args.http_listen))?;
    let (tls, agent_ca) = args.tls.identity(&location)?.unzip();
    // The first admin's password, beside the packages' folder.
    let initial_password = packages_dir.parent().map_or_else(
        || PathBuf::from("initial-admin-password"),
        |p| p.join("initial-admin-password"),
    );
    match &args.admin_token_file {
        // Automation holds the admin's credential: no password is made, so
        // none is printed (under systemd stdout is the journal); accounts
        // are made with the token (POST /api/v1/accounts).
        Some(file) => {
            let token = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --admin-token-file {}", file.display()))?;
            flotilla_controller::auth::register_admin_token(&db, "bootstrap", token.trim())
                .await
                .with_context(|| format!("--admin-token-file {}", file.display()))?;
        }
        None => {
            if let Some(password) = flotilla_controller::auth::first_admin(&db, true).await? {
                // Never printed: under systemd, stdout is the journal.
                flotilla_proto::tls::write_pem_file(
                    &initial_password,
                    &format!("{password}\n"),
                    true,
                )
                .with_context(|| format!("cannot write {}", initial_password.display()))?;
                println!(
                    "flotilla-controller first start: account \"admin\", its password in {} (readable by this account only; it must be changed at the first sign-in, and the file is removed then)",
                    initial_password.display()
                );
            }
        }
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(database = %location, "controller starting");
    if let Some(identity) = &tls {
        println!(
            "flotilla-controller CA fingerprint: {}",
            identity.ca_fingerprint
        );
    }
    println!(
        "flotilla-controller agents: {scheme}://{}",
        grpc.local_addr()?
    );
    println!(
        "flotilla-controller dashboard: {scheme}://{}/",
        http.local_addr()?
    );
    let settings = flotilla_controller::Settings {
        heartbeats,
        public_url: args.public_url,
        tls,
        names: args.tls.names(),
        package_hosts: args.package_hosts,
        webhook_hosts: args.webhook_hosts,
        agent_ca,
        agent_certificate_lifetime: args.tls.agent_certificate_lifetime,
        agents_urls: args.agents_urls,
        publisher_keys: args.publisher_keys,
        initial_password: Some(initial_password),
        audit: (args.audit_retention_days > 0).then(|| flotilla_controller::audit::Retention {
            days: args.audit_retention_days,
            archive: args.audit_archive.clone().unwrap_or_else(|| {
                packages_dir.parent().map_or_else(
                    || PathBuf::from("audit-archive"),
                    |p| p.join("audit-archive"),
                )
            }),
        }),
        http_limits: flotilla_controller::serving::Limits {
            connections: args.http_connections as usize,
            per_source: args.http_connections_per_source as usize,
            request_head: Duration::from_secs(args.request_head_seconds),
        },
    };
    let controller = flotilla_controller::Controller {
        db,
        packages,
        settings,
        grpc,
        http,
    };
    ready();
    flotilla_controller::run(controller, shutdown).await
}
