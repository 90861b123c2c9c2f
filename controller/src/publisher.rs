//! The publisher's command line: make a key pair, build and sign module
//! packages, publish a release to a controller. `main` maps the subcommands
//! here; everything talks to the controller only through its REST API.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use flotilla_proto::package::{build, sha256_file};
use flotilla_proto::signing::SecretKey;
use serde_json::{Value, json};

/// Writes `<out>.key` (secret, owner-only) and `<out>.pub`; returns the key id.
pub fn keygen(out: &Path) -> anyhow::Result<String> {
    let key = SecretKey::generate()?;
    let secret = out.with_extension("key");
    let public = out.with_extension("pub");
    for path in [&secret, &public] {
        if path.exists() {
            bail!("{} exists: refusing to overwrite a key", path.display());
        }
    }
    write_private(&secret, &format!("{}\n", key.to_hex()))?;
    std::fs::write(&public, format!("{}\n", key.public().to_hex()))
        .with_context(|| format!("cannot write {}", public.display()))?;
    Ok(key.public().id())
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // Closed to other users before the key is in it.
    flotilla_proto::acl::restrict(path)
        .with_context(|| format!("cannot restrict {} to this account", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn load_key(path: &Path) -> anyhow::Result<SecretKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key {}", path.display()))?;
    SecretKey::from_hex(&text).with_context(|| format!("key {}", path.display()))
}

/// What to put in a package.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub module: String,
    pub version: String,
    pub kind: String,
    pub from: PathBuf,
    pub preserve: Vec<String>,
    pub health_url: Option<String>,
    pub out: PathBuf,
    pub key: Option<PathBuf>,
    /// A database package's upgrade scripts: every file of this folder, in
    /// name order.
    pub scripts: Option<PathBuf>,
    /// A database package's engine and standard schemas: computed here by
    /// applying the baseline, then the scripts, to a scratch database.
    pub database: Option<DatabaseBuild>,
    /// An agent package's platform (`linux-x86_64`, `windows-x86_64`).
    pub platform: Option<String>,
}

/// How to compute a database package's standard schemas.
#[derive(Clone)]
pub struct DatabaseBuild {
    pub engine: flotilla_proto::database::Engine,
    /// The standard schema of `from_version`, as one SQL script.
    pub baseline: PathBuf,
    pub from_version: String,
    /// PostgreSQL: a server where a scratch database may be created and
    /// dropped (`postgres://user@host:port/postgres`).
    pub scratch_url: Option<String>,
}

/// Never the scratch URL, which may hold a password.
impl std::fmt::Debug for DatabaseBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseBuild")
            .field("engine", &self.engine)
            .field("baseline", &self.baseline)
            .field("from_version", &self.from_version)
            .finish_non_exhaustive()
    }
}

/// The standard fingerprints (from, to) as JSON: the baseline applied to a
/// scratch database, then each script in order.
async fn standards(
    build: &DatabaseBuild,
    scripts: &[(String, Vec<u8>)],
    dir: &Path,
) -> anyhow::Result<(String, String)> {
    use flotilla_proto::database::{Database, Script};
    let text = |name: &str, bytes: &[u8]| {
        String::from_utf8(bytes.to_vec()).with_context(|| format!("{name} is not UTF-8 text"))
    };
    let baseline = std::fs::read(&build.baseline)
        .with_context(|| format!("cannot read the baseline {}", build.baseline.display()))?;
    let scratch = Database::scratch(build.engine, build.scratch_url.as_deref(), dir).await?;
    let result = async {
        scratch
            .database
            .apply(&Script {
                name: build.baseline.display().to_string(),
                sql: text("the baseline", &baseline)?,
            })
            .await?;
        let from = scratch.database.fingerprint().await?;
        for (name, bytes) in scripts {
            scratch
                .database
                .apply(&Script {
                    name: name.clone(),
                    sql: text(name, bytes)?,
                })
                .await?;
        }
        let to = scratch.database.fingerprint().await?;
        anyhow::Ok((
            serde_json::to_string_pretty(&from)?,
            serde_json::to_string_pretty(&to)?,
        ))
    }
    .await;
    scratch.remove().await?;
    result
}

/// Builds a package (and its `.sha256`, and `.sig` when a key is given);
/// returns its sha256.
pub async fn build_package(request: &BuildRequest) -> anyhow::Result<String> {
    if !request.from.is_dir() {
        bail!("{} is not a folder", request.from.display());
    }
    let mut manifest = format!(
        "module = {:?}\nversion = {:?}\nkind = {:?}\n",
        request.module, request.version, request.kind
    );
    if !request.preserve.is_empty() {
        manifest.push_str(&format!("preserve = {:?}\n", request.preserve));
    }
    if let Some(platform) = &request.platform {
        manifest.push_str(&format!("platform = {platform:?}\n"));
    }
    if let Some(url) = &request.health_url {
        manifest.push_str(&format!("[health_check]\nurl = {url:?}\n"));
    }
    if request.database.is_some() && request.scripts.is_none() {
        bail!("--engine needs --scripts: the standard schemas come from applying them");
    }
    match &request.scripts {
        None => build::from_folder(&request.out, &manifest, &request.from)
            .with_context(|| format!("cannot write {}", request.out.display()))?,
        Some(dir) => {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .with_context(|| format!("cannot read the scripts folder {}", dir.display()))?
                .filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            let scripts = names
                .iter()
                .map(|name| Ok((name.clone(), std::fs::read(dir.join(name))?)))
                .collect::<std::io::Result<Vec<_>>>()?;
            check_scripts(dir, &scripts)?;
            // A top-level key: before any [table] of the manifest.
            manifest = format!("upgrade_scripts = {names:?}\n{manifest}");
            let mut standard = Vec::new();
            if let Some(database) = &request.database {
                let dir = request
                    .out
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let (from, to) = standards(database, &scripts, dir).await?;
                manifest.push_str(&format!(
                    "[database]\nengine = {:?}\nfrom_version = {:?}\n",
                    database.engine.as_str(),
                    database.from_version
                ));
                standard = vec![
                    ("from.json".to_owned(), from.into_bytes()),
                    ("to.json".to_owned(), to.into_bytes()),
                ];
            }
            build::with_scripts(&request.out, &manifest, &request.from, &scripts, &standard)
                .with_context(|| format!("cannot write {}", request.out.display()))?;
        }
    }
    // Read back as an agent would: the manifest must be valid.
    flotilla_proto::package::read_manifest(&request.out)?;
    let sha256 = sha256_file(&request.out)?;
    std::fs::write(sidecar(&request.out, "sha256"), format!("{sha256}\n"))?;
    if let Some(key) = &request.key {
        sign(key, &request.out)?;
    }
    Ok(sha256)
}

/// Signs a package: writes `<package>.sig`; returns the key id.
pub fn sign(key: &Path, package: &Path) -> anyhow::Result<String> {
    let key = load_key(key)?;
    let sha256 =
        sha256_file(package).with_context(|| format!("cannot read {}", package.display()))?;
    std::fs::write(
        sidecar(package, "sig"),
        format!("{}\n", key.sign_package(&sha256)),
    )?;
    Ok(key.public().id())
}

fn sidecar(package: &Path, extension: &str) -> PathBuf {
    PathBuf::from(format!("{}.{extension}", package.display()))
}

/// A client of the controller's API, trusting the CA in `ca` (PEM) besides
/// the system's roots.
pub fn client(ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if let Some(ca) = ca {
        let (pem, _) = flotilla_proto::tls::read_certificates(ca)?;
        let certificates = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .with_context(|| format!("cannot use the certificates of {}", ca.display()))?;
        builder = builder.tls_certs_merge(certificates);
    }
    builder.build().context("cannot set up the HTTPS client")
}

/// A controller's API, as the publisher's tooling reaches it.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// `https://controller:7080`.
    pub server: &'a str,
    /// The controller's CA certificate, when the system does not know it.
    pub ca: Option<&'a Path>,
    /// An API token with the publisher role. Never logged.
    pub token: &'a str,
}

impl std::fmt::Debug for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("server", &self.server)
            .field("ca", &self.ca)
            .field("token", &"<hidden>")
            .finish()
    }
}

/// Uploads each package (streamed) and publishes the release; returns the
/// controller's answer.
pub async fn publish(
    target: &Target<'_>,
    version: &str,
    notes: &str,
    packages: &[PathBuf],
) -> anyhow::Result<Value> {
    let client = client(target.ca)?;
    let base = target.server.trim_end_matches('/');
    let bearer = format!("Bearer {}", target.token);
    let mut entries = Vec::new();
    for package in packages {
        let signature = std::fs::read_to_string(sidecar(package, "sig"))
            .with_context(|| {
                format!(
                    "{} is not signed: run `flotilla-controller package sign` first",
                    package.display()
                )
            })?
            .trim()
            .to_owned();
        let sha256 =
            sha256_file(package).with_context(|| format!("cannot read {}", package.display()))?;
        let file = tokio::fs::File::open(package).await?;
        let size = file.metadata().await?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 * 1024,
        ));
        let response = client
            .put(format!("{base}/api/v1/packages/{sha256}"))
            .header(reqwest::header::AUTHORIZATION, &bearer)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .header(reqwest::header::CONTENT_TYPE, "application/zip")
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the controller at {base}"))?;
        if !response.status().is_success() {
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            bail!(
                "uploading {}: {status}: {}",
                package.display(),
                answer["message"]
            );
        }
        entries.push(json!({"sha256": sha256, "signature": signature}));
    }
    let response = client
        .post(format!("{base}/api/v1/releases"))
        .header(reqwest::header::AUTHORIZATION, &bearer)
        .json(&json!({"version": version, "notes": notes, "packages": entries}))
        .send()
        .await
        .with_context(|| format!("cannot reach the controller at {base}"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "publishing release {version}: {status}: {}",
            answer["message"].as_str().unwrap_or("?")
        );
    }
    Ok(json!({"created": status == reqwest::StatusCode::CREATED, "release": answer}))
}

/// Refuses, before anything is written, a script that would break the
/// all-or-nothing upgrade: not UTF-8, committing or rolling back itself, or
/// a `no-transaction` script of several statements. Names the file and line.
fn check_scripts(dir: &Path, scripts: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    for (name, bytes) in scripts {
        let path = dir.join(name);
        let sql = std::str::from_utf8(bytes).map_err(|e| {
            anyhow::anyhow!(
                "{}: not UTF-8 ({e}); no package was written",
                path.display()
            )
        })?;
        let script = flotilla_proto::database::Script {
            name: name.clone(),
            sql: sql.to_owned(),
        };
        if let Some((line, why)) = script.problem() {
            bail!(
                "{}, line {line}: {why}; no package was written",
                path.display()
            );
        }
    }
    Ok(())
}
