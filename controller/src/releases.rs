//! The content-addressed package store, `<data>/packages/<sha256>.zip`,
//! and the rule for URLs the controller calls or names (HTTPS, a host on an
//! allowlist, no credentials). Publishing and serving releases over REST is
//! [`crate::api::releases`].

use std::path::PathBuf;

/// Where package files live.
#[derive(Debug)]
pub struct PackageStore {
    dir: PathBuf,
    /// Names each upload's temporary file.
    uploads: std::sync::atomic::AtomicU64,
}

impl PackageStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            uploads: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Where the package with this sha256 is (or would be) stored.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.zip"))
    }

    /// A new temporary file beside the store for an upload of `sha256`.
    pub fn upload_path(&self, sha256: &str) -> PathBuf {
        let upload = self
            .uploads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.join(format!(".{sha256}.{upload}.upload"))
    }
}

/// Whether a package may be fetched from `url`: HTTPS only, from a host on
/// the allowlist (`--package-host`, and the controller's own), with no
/// credentials in it.
pub fn check_package_url(url: &str, hosts: &[String]) -> Result<(), String> {
    check_url(url, hosts, "package hosts (--package-host)")
}

/// Whether the controller may call `url`: HTTPS only, from a host on the
/// allowlist `hosts` (named `list` in the error), with no credentials in it.
pub fn check_url(url: &str, hosts: &[String], list: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("\"{url}\" is not a URL: {e}"))?;
    if parsed.scheme() != "https" {
        return Err(format!(
            "only https:// URLs are accepted, not {}://",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("a URL with credentials in it is refused".to_owned());
    }
    let host = parsed.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return Err(format!(
            "the host \"{host}\" is not on the allowlist of {list}: {}",
            if hosts.is_empty() {
                "none".to_owned()
            } else {
                hosts.join(", ")
            }
        ));
    }
    Ok(())
}
