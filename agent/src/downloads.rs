//! Pre-downloading published packages. The controller pushes every
//! published package over the stream; for each module of this server the
//! agent takes the highest published version above the installed one and
//! downloads what it lacks in the background: a bounded number at a time, an
//! optional bandwidth limit, resuming a `.part` file after a cut or a
//! restart. Only a package whose sha256 matches and whose signature verifies
//! with a trusted publisher key reaches `<data>/bin/updates/packages/`, where
//! it becomes an update to install.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_proto::link::PackageOffer;
use flotilla_proto::package::{read_manifest, sha256_file};
use flotilla_proto::signing::verify_package;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::ControllerTrust;
use crate::state::{Agent, DownloadState};

/// What the controller and the portal are told of a module's download.
pub fn report(state: &DownloadState) -> Option<flotilla_proto::domain::DownloadReport> {
    use flotilla_proto::domain::DownloadReport;
    match state {
        DownloadState::Downloading {
            version,
            received,
            total,
        } => Some(DownloadReport {
            state: "downloading".into(),
            version: version.clone(),
            detail: if *total > 0 {
                format!(
                    "{}% of {} MB",
                    received * 100 / total,
                    total.div_ceil(1_000_000)
                )
            } else {
                format!("{} MB", received / 1_000_000)
            },
        }),
        DownloadState::Failed { version, why } => Some(DownloadReport {
            state: "failed".into(),
            version: version.clone(),
            detail: why.clone(),
        }),
        DownloadState::Refused { version, why } => Some(DownloadReport {
            state: "refused".into(),
            version: version.clone(),
            detail: why.clone(),
        }),
        DownloadState::Ready { .. } => None,
    }
}

/// Downloads what is missing whenever offers or the inventory change, and
/// retries failures every 30 s, until `stop`.
pub async fn run(agent: Arc<Agent>, stop: CancellationToken) {
    let limit = Arc::new(Semaphore::new(agent.settings.download_concurrency.max(1)));
    let mut inventory = agent.inventory.subscribe();
    let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        running.retain(|_, task| !task.is_finished());
        prune(&agent);
        for offer in wanted(&agent) {
            if running.contains_key(&offer.sha256) {
                continue;
            }
            let (agent, limit) = (agent.clone(), limit.clone());
            let sha = offer.sha256.clone();
            running.insert(
                sha,
                tokio::spawn(async move {
                    let Ok(_permit) = limit.acquire_owned().await else {
                        return;
                    };
                    let module = offer.module.clone();
                    let version = offer.version.to_string();
                    match download(&agent, &offer).await {
                        Ok(()) => {
                            tracing::info!(module, version, "package downloaded and verified");
                            agent
                                .downloads
                                .set(&module, DownloadState::Ready { version });
                        }
                        Err(Failure::Transient(why)) => {
                            tracing::warn!(
                                module,
                                version,
                                "download failed, retried later: {why}"
                            );
                            agent
                                .downloads
                                .set(&module, DownloadState::Failed { version, why });
                        }
                        Err(Failure::Refused(why)) => {
                            tracing::error!(module, version, "package refused: {why}");
                            agent
                                .downloads
                                .set(&module, DownloadState::Refused { version, why });
                        }
                    }
                    agent.rescan.notify_one();
                }),
            );
        }
        tokio::select! {
            _ = stop.cancelled() => {
                for task in running.values() {
                    task.abort();
                }
                return;
            }
            _ = agent.downloads.wake.notified() => {}
            changed = inventory.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

/// For each module here, the highest published version when it is newer
/// than the installed one and not yet in the packages folder. Older versions
/// are never fetched on the agent's own initiative: going back is an explicit
/// rollback or rollout, never a pre-download.
fn wanted(agent: &Agent) -> Vec<PackageOffer> {
    let inventory = agent.inventory.borrow().clone();
    let offers = agent
        .downloads
        .offers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let packages = agent.settings.layout.packages_dir();
    let mut wanted = Vec::new();
    for module in &inventory.modules {
        let Some(offer) = offers
            .iter()
            .filter(|o| o.module == module.name.as_str())
            .max_by(|a, b| a.version.cmp(&b.version))
        else {
            continue;
        };
        if module
            .installed_version
            .as_ref()
            .is_some_and(|installed| offer.version <= *installed)
        {
            continue;
        }
        if packages.join(file_name(offer)).is_file() {
            continue;
        }
        // A package that failed its checks is not fetched again: its bytes
        // will not change. A download cut by the network is retried.
        let refused = matches!(
            agent.downloads.states().get(module.name.as_str()),
            Some(DownloadState::Refused { version, .. }) if *version == offer.version.to_string()
        );
        if !refused {
            wanted.push(offer.clone());
        }
    }
    wanted
}

/// How long an older package put in the cache is kept for the downgrade
/// that names it.
const DOWNGRADE_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// The cache's retention rule: a package is kept while it is newer than the
/// installed version; once installed or superseded it goes, with its
/// checksum, signature and notes. (Old versions live on as backups.)
fn prune(agent: &Agent) {
    let inventory = agent.inventory.borrow().clone();
    let dir = agent.settings.layout.packages_dir();
    let trust = agent.trust();
    for pending in crate::pending::packages_in(&dir, &trust) {
        let Some(module) = inventory.module(&pending.module) else {
            continue;
        };
        let withdrawn = pending.trust == crate::pending::Trust::Withdrawn;
        let installed = module.installed_version.as_ref();
        // An older package put there just now is a downgrade on its way
        // (an install order naming it by its sha256 follows): it is given
        // a while before it counts as superseded.
        let just_put = std::fs::metadata(&pending.package)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age < DOWNGRADE_GRACE);
        let superseded = installed.is_some_and(|installed| {
            pending.version == *installed || (pending.version < *installed && !just_put)
        });
        if withdrawn || superseded {
            for path in [
                pending.package.clone(),
                sidecar(&pending.package, "sha256"),
                sidecar(&pending.package, "sig"),
                sidecar(&pending.package, "notes.md"),
            ] {
                let _ = std::fs::remove_file(path);
            }
            if withdrawn {
                tracing::warn!(module = %pending.module, version = %pending.version, "removed a package whose release was withdrawn");
            } else {
                tracing::info!(module = %pending.module, version = %pending.version, "removed a package already installed or superseded");
            }
        }
    }
}

fn file_name(offer: &PackageOffer) -> String {
    format!("{}-{}.zip", offer.module, offer.version)
}

/// Why a download did not produce a package.
#[derive(Debug)]
enum Failure {
    /// The network or the disk: tried again later, resuming.
    Transient(String),
    /// The package failed its checks: not fetched again.
    Refused(String),
}

impl From<String> for Failure {
    fn from(why: String) -> Self {
        Failure::Transient(why)
    }
}

/// Downloads one package, resuming a `.part` left by a cut or a restart, then
/// verifies and files it.
async fn download(agent: &Agent, offer: &PackageOffer) -> Result<(), Failure> {
    let settings = &agent.settings;
    if settings.trusted_keys.is_empty() {
        return Err(Failure::Refused(
            "no publisher key is trusted (set trusted_keys in the agent's configuration)".into(),
        ));
    }
    let downloads = settings.layout.updates_dir().join("downloads");
    tokio::fs::create_dir_all(&downloads)
        .await
        .map_err(|e| format!("{}: {e}", downloads.display()))?;
    let part = downloads.join(format!("{}.part", offer.sha256));
    fetch(agent, offer, &part).await?;

    let (part_path, offer_clone, keys) =
        (part.clone(), offer.clone(), settings.trusted_keys.clone());
    let checked = tokio::task::spawn_blocking(move || verify(&part_path, &offer_clone, &keys))
        .await
        .map_err(|e| e.to_string())?;
    if let Err(why) = checked {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(Failure::Refused(why));
    }
    let packages = settings.layout.packages_dir();
    tokio::fs::create_dir_all(&packages)
        .await
        .map_err(|e| format!("{}: {e}", packages.display()))?;
    let target = packages.join(file_name(offer));
    let write = |path: PathBuf, text: String| async move {
        tokio::fs::write(&path, text)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    write(sidecar(&target, "sig"), format!("{}\n", offer.signature)).await?;
    write(sidecar(&target, "notes.md"), offer.release_notes.clone()).await?;
    // The checksum last: it is what makes the package visible as pending.
    tokio::fs::rename(&part, &target)
        .await
        .map_err(|e| format!("cannot move the package to {}: {e}", target.display()))?;
    write(sidecar(&target, "sha256"), format!("{}\n", offer.sha256)).await?;
    // Unpacked now, beside the module, so the install only has to swap.
    if let Some(declaration) = crate::installs::declaration(agent, &offer.module) {
        let live = declaration.install_dir(settings.layout.root());
        let (target, sha, limits) = (
            target.clone(),
            offer.sha256.clone(),
            settings.install.limits,
        );
        let staged = tokio::task::spawn_blocking(move || {
            let package =
                flotilla_proto::package::Package::open(&target, &sha).map_err(|e| e.to_string())?;
            crate::install::pre_stage(&package, &live, limits)
        })
        .await
        .map_err(|e| e.to_string())?;
        match staged {
            Ok(folder) => {
                tracing::info!(module = %offer.module, "staged ahead of time in {}", folder.display())
            }
            Err(e) => {
                tracing::warn!(module = %offer.module, "could not stage ahead of time ({e}); the install will unpack it")
            }
        }
    }
    Ok(())
}

fn sidecar(package: &Path, extension: &str) -> PathBuf {
    PathBuf::from(format!("{}.{extension}", package.display()))
}

/// The client packages download with: HTTPS only, trusting the
/// controller's CA besides the system's roots; plain text only when the
/// configuration allows it explicitly. The system's own verifier is used
/// (revocation, roots fetched on demand on Windows) with the controller's
/// CA added; where it cannot take the CA (Wine's), the roots are read from
/// the system's store instead.
fn download_client(trust: &ControllerTrust) -> Result<reqwest::Client, String> {
    let base = || {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
    };
    match trust {
        ControllerTrust::Ca { pem, path, .. } => {
            let ca = |e: &dyn std::fmt::Display| {
                format!("cannot use the controller's CA {}: {e}", path.display())
            };
            let certificates =
                reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| ca(&e))?;
            match base()
                .https_only(true)
                .tls_certs_merge(certificates)
                .build()
            {
                Ok(client) => Ok(client),
                Err(e) => {
                    static SAID: std::sync::Once = std::sync::Once::new();
                    SAID.call_once(|| {
                        tracing::warn!(
                            "the system's certificate verifier does not take the controller's CA ({}); downloads trust the roots read from the system's store and the CA",
                            with_causes(&e)
                        )
                    });
                    let tls = store_roots_and(pem).map_err(|e| ca(&e))?;
                    base()
                        .https_only(true)
                        .tls_backend_preconfigured(tls)
                        .build()
                        .map_err(|e| with_causes(&e))
                }
            }
        }
        ControllerTrust::Plaintext => base().build().map_err(|e| with_causes(&e)),
        ControllerTrust::NotEnrolled { why } => Err(why.clone()),
    }
}

/// A TLS configuration trusting the roots of the system's store and the
/// certificates of `pem`.
fn store_roots_and(pem: &str) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for e in &system.errors {
        tracing::warn!("a root certificate of the system's store cannot be read: {e}");
    }
    let (added, _) = roots.add_parsable_certificates(system.certs);
    if added == 0 {
        tracing::warn!(
            "the system's store holds no root certificate: only the controller's CA is trusted for downloads"
        );
    }
    for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots
            .add(certificate.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// reqwest's error with its causes (its own text is only "builder error").
fn with_causes(e: &reqwest::Error) -> String {
    let mut text = format!("cannot make the download client: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Fetches `offer.url` into `part`, resuming from what `part` holds.
async fn fetch(agent: &Agent, offer: &PackageOffer, part: &Path) -> Result<(), String> {
    let client = download_client(&agent.settings.controller_trust)?;
    let limit = agent.settings.download_limit_bytes_per_second;
    let etag = format!("\"{}\"", offer.sha256);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let have = tokio::fs::metadata(part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let mut request = client.get(&offer.url);
        if let Some(token) = agent.downloads.token_for(&offer.url) {
            request = request.bearer_auth(token);
        }
        if have > 0 {
            tracing::info!(module = %offer.module, version = %offer.version, "resuming the download at byte {have}");
            request = request
                .header(reqwest::header::RANGE, format!("bytes={have}-"))
                .header(reqwest::header::IF_RANGE, &etag);
        }
        let result = async {
            let mut response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let resume = status == reqwest::StatusCode::PARTIAL_CONTENT;
            if !status.is_success() {
                return Err(format!("{} answered {status}", offer.url));
            }
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(resume)
                .write(true)
                .truncate(!resume)
                .open(part)
                .await
                .map_err(|e| format!("{}: {e}", part.display()))?;
            let mut received = if resume { have } else { 0 };
            let total = offer.size.max(received);
            let started = Instant::now();
            let mut sent_since_start = 0u64;
            let mut last_report = Instant::now();
            while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
                file.write_all(&chunk)
                    .await
                    .map_err(|e| format!("{}: {e}", part.display()))?;
                received += chunk.len() as u64;
                sent_since_start += chunk.len() as u64;
                if let Some(limit) = limit {
                    // Sleep until the average rate is back under the limit.
                    let due = Duration::from_secs_f64(sent_since_start as f64 / limit as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                if last_report.elapsed() >= Duration::from_millis(500) {
                    last_report = Instant::now();
                    agent.downloads.set(
                        &offer.module,
                        DownloadState::Downloading {
                            version: offer.version.to_string(),
                            received,
                            total,
                        },
                    );
                    agent.rescan.notify_one();
                }
            }
            file.flush().await.map_err(|e| e.to_string())?;
            file.sync_all().await.map_err(|e| e.to_string())?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(why) if attempts < 8 => {
                tracing::warn!(module = %offer.module, "download interrupted ({why}); resuming");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempts))).await;
            }
            Err(why) => {
                return Err(format!(
                    "download of {} failed after {attempts} attempts: {why}",
                    offer.url
                ));
            }
        }
    }
}

/// The checks a downloaded package must pass.
fn verify(
    part: &Path,
    offer: &PackageOffer,
    keys: &[flotilla_proto::signing::PublicKey],
) -> Result<(), String> {
    let actual = sha256_file(part).map_err(|e| format!("{}: {e}", part.display()))?;
    if actual != offer.sha256 {
        return Err(format!(
            "{} {}: the downloaded bytes have sha256 {actual}, not the published {}: refused",
            offer.module, offer.version, offer.sha256
        ));
    }
    verify_package(keys, &offer.sha256, &offer.signature)
        .map_err(|e| format!("{} {}: {e}: refused", offer.module, offer.version))?;
    let manifest = read_manifest(part).map_err(|e| e.to_string())?;
    if manifest.module.as_str() != offer.module || manifest.version != offer.version {
        return Err(format!(
            "{} {}: the package says it is {} {}: refused",
            offer.module, offer.version, manifest.module, manifest.version
        ));
    }
    Ok(())
}
