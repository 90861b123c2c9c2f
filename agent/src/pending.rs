//! The packages waiting in `<data>/bin/updates/packages/` (named by
//! sha256, never by a path), and which of them this agent installs: those
//! whose signature a trusted publisher key made, unsigned ones only when
//! the configuration allows them, never a withdrawn one; and of a module's
//! packages, which one is its pending update.

use std::path::{Path, PathBuf};

use flotilla_proto::domain::Version;

use crate::install::package;

/// A package waiting in `<data>/bin/updates/packages/` for a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub module: String,
    pub version: Version,
    pub package: PathBuf,
    pub sha256: String,
    /// How its signature (`<name>.zip.sig`) stands.
    pub trust: Trust,
}

/// Every `<name>.zip` with a `<name>.zip.sha256` beside it and a readable
/// manifest, with how its signature (`<name>.zip.sig`) stands.
pub fn packages_in(dir: &Path, trust: &PackageTrust) -> Vec<Pending> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "zip"))
        .filter_map(|path| {
            let sidecar = |extension: &str| {
                std::fs::read_to_string(format!("{}.{extension}", path.display()))
                    .ok()
                    .and_then(|text| text.split_whitespace().next().map(str::to_owned))
            };
            let sha256 = sidecar("sha256")?;
            let signature = sidecar("sig");
            let manifest = package::read_manifest(&path).ok()?;
            Some(Pending {
                module: manifest.module.to_string(),
                version: manifest.version,
                trust: trust.check(&sha256, signature.as_deref()),
                package: path,
                sha256,
            })
        })
        .collect()
}

/// How a package's signature stands with this agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Signed by a trusted publisher key: its id.
    Signed(String),
    /// No signature: installed only where the configuration allows
    /// unsigned local packages, and never ahead of a signed one.
    Unsigned,
    /// A signature that no trusted key verifies: never installed.
    Untrusted(String),
    /// Its release was withdrawn: never installed, and dropped.
    Withdrawn,
}

/// Which packages this agent installs: those signed by a trusted publisher
/// key, and unsigned ones only when `allow_unsigned_local_packages` says so.
#[derive(Debug, Clone, Default)]
pub struct PackageTrust {
    pub keys: Vec<flotilla_proto::signing::PublicKey>,
    pub allow_unsigned: bool,
    /// The sha256 of packages whose release was withdrawn.
    pub withdrawn: std::collections::HashSet<String>,
}

impl PackageTrust {
    /// How a package whose sha256 is `sha256` and signature `signature`
    /// stands.
    pub fn check(&self, sha256: &str, signature: Option<&str>) -> Trust {
        if self.withdrawn.contains(&sha256.to_ascii_lowercase()) {
            return Trust::Withdrawn;
        }
        match signature {
            None => Trust::Unsigned,
            Some(signature) => {
                match flotilla_proto::signing::verify_package(&self.keys, sha256, signature) {
                    Ok(key) => Trust::Signed(key),
                    Err(e) => Trust::Untrusted(e.to_string()),
                }
            }
        }
    }

    /// Whether a package of this standing may be installed.
    pub fn accepts(&self, trust: &Trust) -> bool {
        match trust {
            Trust::Signed(_) => true,
            Trust::Unsigned => self.allow_unsigned,
            Trust::Untrusted(_) | Trust::Withdrawn => false,
        }
    }

    /// Why a package of this standing is not installed, if it is not.
    pub fn refusal(&self, trust: &Trust) -> Option<String> {
        match trust {
            Trust::Signed(_) => None,
            Trust::Unsigned if self.allow_unsigned => None,
            Trust::Unsigned => Some(
                "it is not signed, and this agent installs unsigned packages only with allow_unsigned_local_packages = true".to_owned(),
            ),
            Trust::Untrusted(why) => Some(format!("its signature is not trusted: {why}")),
            Trust::Withdrawn => Some("its release was withdrawn".to_owned()),
        }
    }
}

/// Of `candidates` for one module, the one to install over `installed`:
/// the newest signed one newer than `installed`; an unsigned one only if
/// none is signed and the configuration allows it.
pub fn best<'a>(
    candidates: impl Iterator<Item = &'a Pending>,
    installed: Option<&Version>,
    trust: &PackageTrust,
) -> Option<&'a Pending> {
    let eligible: Vec<&Pending> = candidates
        .filter(|p| installed.is_none_or(|v| p.version > *v))
        .filter(|p| trust.accepts(&p.trust))
        .collect();
    let newest = |signed: bool| {
        eligible
            .iter()
            .filter(|p| matches!(p.trust, Trust::Signed(_)) == signed)
            .max_by(|a, b| a.version.cmp(&b.version))
            .copied()
    };
    newest(true).or_else(|| newest(false))
}
