//! A server joins the fleet in one command, and leaves it in one.
//!
//! `flotilla-agent join --controller https://… --ca-fingerprint sha256:…`
//! enrolls (the one-time token from `FLOTILLA_ENROLLMENT_TOKEN`, a file, or
//! standard input: never a command line), writes the configuration with
//! what the controller said at enrollment (where agents connect, the
//! publisher keys to trust), installs the service and starts it, and says
//! what it did. Run again, it changes nothing that is already right.
//! `flotilla-agent leave` stops and removes the service, has the controller
//! revoke this server's certificate when it can be reached, sets the
//! identity aside and keeps the data folder.

use std::path::{Path, PathBuf};

use anyhow::Context;
use flotilla_proto::service::{self, Action, Found, Spec};

use crate::config::{DataLayout, Settings, data_layout_of, default_data_root};

/// The service's stable name, for `sc.exe` and `systemctl`.
pub use crate::doctor::SERVICE_NAME;
pub use crate::service_spec::service_spec;

/// The agent's service, as it is installed: this executable is adopted as
/// its version's folder's (`<data>/bin/agent/versions/<v>/`), and the
/// service runs the current version: through `<data>/bin/agent/current` on
/// Linux, that version's own executable on Windows; so that the agent can
/// update itself ([`crate::self_update`]).
pub fn installed_service_spec(config: &Path, unit_dir: PathBuf) -> anyhow::Result<Spec> {
    let mut spec = service_spec(config, unit_dir)?;
    let home = crate::self_update::Home::of(&data_layout_of(config)?);
    spec.executable = home
        .adopt(&spec.executable)
        .with_context(|| format!("cannot copy the agent into {}", home.versions().display()))?;
    Ok(spec)
}

/// What `join` is asked.
#[derive(Debug)]
pub struct Join {
    /// The controller's HTTPS address (its dashboard's).
    pub controller: String,
    pub ca_fingerprint: String,
    /// The one-time token, when the agent is not enrolled yet.
    pub token: Option<String>,
    /// Where the configuration is (or goes).
    pub config: PathBuf,
    /// The data folder, when not the configuration's or the default.
    pub data_dir: Option<PathBuf>,
    /// Install and start the service.
    pub service: bool,
    /// Linux: where the systemd unit goes.
    pub unit_dir: PathBuf,
}

/// The data folder `join` works in, and whether the agent is enrolled
/// there with a configuration that loads (nothing to enroll again).
pub fn enrolled(config: &Path, data_dir: Option<&Path>) -> anyhow::Result<(DataLayout, bool)> {
    let layout = match data_dir {
        Some(dir) => DataLayout::new(dir.to_path_buf()),
        None if config.exists() => data_layout_of(config)?,
        None => DataLayout::new(default_data_root()),
    };
    let enrolled =
        layout.identity_file().exists() && config.exists() && Settings::load(config).is_ok();
    Ok((layout, enrolled))
}

/// Joins the fleet; what it did, a line each.
pub async fn join(join: &Join) -> anyhow::Result<Vec<String>> {
    let mut did = Vec::new();
    let (layout, enrolled) = enrolled(&join.config, join.data_dir.as_deref())?;
    if enrolled {
        let settings = Settings::load(&join.config)?;
        did.push(format!(
            "already enrolled as {} of site {} ({}); {} kept as it is",
            settings.server_id,
            settings.site,
            layout.identity_file().display(),
            join.config.display()
        ));
    } else {
        let token = join.token.as_deref().context(
            "no enrollment token: paste it when asked, pipe it in, set FLOTILLA_ENROLLMENT_TOKEN, or give --token-file; an admin creates one on the dashboard (Agents, Enroll a server)",
        )?;
        let enrolled = crate::identity::enroll(
            &layout.identity_dir(),
            &join.controller,
            token,
            &join.ca_fingerprint,
        )
        .await?;
        did.push(format!(
            "enrolled as {} (identity in {})",
            enrolled.identity.certificate.identity,
            layout.identity_file().display()
        ));
        if join.config.exists() {
            Settings::load(&join.config).with_context(|| {
                format!(
                    "enrolled, but the configuration {} does not load: fix it (or remove it and run join again)",
                    join.config.display()
                )
            })?;
            did.push(format!("{} kept as it is", join.config.display()));
        } else {
            write_config(&join.config, &layout, &enrolled)?;
            did.push(format!(
                "{} written: controller_url = {:?}, {} trusted publisher key(s), data in {}",
                join.config.display(),
                enrolled.agents_urls,
                enrolled.publisher_keys.len(),
                layout.root().display()
            ));
        }
    }
    if join.service {
        let spec = service_spec(&join.config, join.unit_dir.clone())?;
        did.extend(ensure_service(&spec, &join.config)?);
    } else {
        did.push(format!(
            "service left alone (--no-service): start the agent with `flotilla-agent run --config {}`",
            join.config.display()
        ));
    }
    Ok(did)
}

/// The configuration an enrollment leaves: the agents' address and the
/// publisher keys the controller gave, and the data folder.
fn write_config(
    config: &Path,
    layout: &DataLayout,
    enrolled: &crate::identity::Enrolled,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !enrolled.agents_urls.is_empty(),
        "the controller did not say where agents connect (an older controller): write {} by hand (controller_url = its agents' address)",
        config.display()
    );
    let quoted = |items: &[String]| {
        items
            .iter()
            .map(|item| format!("{item:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "# Written by `flotilla-agent join`, from what the controller said at enrollment.\n\
         data_dir = {:?}\n\
         controller_url = [{}]\n\
         trusted_keys = [{}]\n",
        layout.root().display().to_string(),
        quoted(&enrolled.agents_urls),
        quoted(&enrolled.publisher_keys),
    );
    if let Some(parent) = config.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let written = config.with_extension("toml.new");
    std::fs::write(&written, text)
        .with_context(|| format!("cannot write {}", written.display()))?;
    std::fs::rename(&written, config)
        .with_context(|| format!("cannot write {}", config.display()))?;
    Settings::load(config).context("the configuration join wrote does not load")?;
    Ok(())
}

/// The service installed and running, as the platform's manager says;
/// what was done. A manager that cannot be asked (no systemd) is said.
fn ensure_service(spec: &Spec, config: &Path) -> anyhow::Result<Vec<String>> {
    let mut did = Vec::new();
    let found = service::find(spec.name, &spec.unit_dir);
    let running = match found {
        Found::Installed { running, .. } => {
            did.push(format!("service {} already installed", spec.name));
            running
        }
        Found::NotInstalled | Found::Unknown(_) => {
            let installed = installed_service_spec(config, spec.unit_dir.clone())?;
            did.push(service::control(&installed, Action::Install)?);
            false
        }
    };
    match (running, service::find(spec.name, &spec.unit_dir)) {
        (true, _) => did.push(format!("service {} already running", spec.name)),
        (false, Found::Unknown(why)) => did.push(format!(
            "not started: {why}; start the agent with `flotilla-agent run --config {}`",
            config.display()
        )),
        (false, _) => did.push(service::control(spec, Action::Start)?),
    }
    Ok(did)
}

/// Leaves the fleet; what it did, a line each.
pub async fn leave(config: &Path, service: bool, unit_dir: PathBuf) -> anyhow::Result<Vec<String>> {
    let mut did = Vec::new();
    if service {
        let spec = service_spec(config, unit_dir)?;
        match service::find(spec.name, &spec.unit_dir) {
            Found::NotInstalled => did.push(format!("no service {} to remove", spec.name)),
            Found::Installed { .. } => did.push(service::control(&spec, Action::Uninstall)?),
            // No manager to ask (no systemd): its unit, if written, goes.
            Found::Unknown(why) => match service::control(&spec, Action::Uninstall) {
                Ok(done) => did.push(done),
                Err(e) => did.push(format!("no service removed ({e}; {why})")),
            },
        }
    }
    let settings = Settings::load(config)
        .with_context(|| format!("{}: not enrolled, nothing to revoke", config.display()))?;
    let server = &settings.server_id;
    match crate::link::leave(&settings).await {
        Ok(revoked) => did.push(format!("certificate of {revoked} revoked by the controller")),
        Err(why) => did.push(format!(
            "the controller could not be asked ({why}): revoke {server} on the dashboard (Agents, Revoke)"
        )),
    }
    let identity = settings.layout.identity_file();
    let aside = identity.with_extension(format!(
        "left-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    std::fs::rename(&identity, &aside)
        .with_context(|| format!("cannot set {} aside", identity.display()))?;
    did.push(format!(
        "identity set aside as {}; configuration and data kept in {} and {}",
        aside.display(),
        config.display(),
        settings.layout.root().display()
    ));
    Ok(did)
}
