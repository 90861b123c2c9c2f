//! What an install takes its bytes from: a package (named by its sha256,
//! or the module's pending one) or a kept backup, resolved and checked
//! before anything starts; and the kept backups of a module.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use flotilla_proto::domain::Version;

use super::StartError;
use crate::applications::{self, ModuleDeclaration};
use crate::inventory::{installed_version, pending};
use crate::pending::packages_in;
use crate::state::Agent;

/// A kept backup of a module.
#[derive(Debug, Clone)]
pub struct Kept {
    pub path: PathBuf,
    /// Its file name, which names it to a restore (never a path).
    pub file: String,
    /// The version it holds.
    pub version: Version,
    /// When it was taken, from its name.
    pub taken_at: Option<DateTime<Utc>>,
    pub size: u64,
}

/// The kept backups of `module`, newest first.
pub fn backups(agent: &Agent, module: &str) -> Vec<Kept> {
    crate::install::backup::list(&agent.settings.install.backup_dir, module)
        .into_iter()
        .filter_map(|path| {
            let file = path.file_name()?.to_str()?.to_owned();
            let name = path
                .file_stem()?
                .to_str()?
                .strip_prefix(&format!("{module}_"))?
                .to_owned();
            let (version, _) = name.rsplit_once('_')?;
            Some(Kept {
                version: Version::parse(version).ok()?,
                taken_at: crate::install::backup::taken_time(&path),
                size: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
                file,
                path,
            })
        })
        .collect()
}

/// The declaration of `module` in `applicationspath.config`.
pub fn declaration(agent: &Agent, module: &str) -> Option<ModuleDeclaration> {
    applications::load(&agent.settings.layout.applications_config())
        .modules
        .into_iter()
        .find(|m| m.name.as_str() == module)
}

/// Starts installing `module` from `package` (or its pending package) in the
/// background; refuses if an install is already running.
/// What to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The module's pending package.
    Pending,
    /// One of the packages in `<data>/bin/updates/packages/`, named by its
    /// sha256 (never by a path), whose signature this agent accepts; older
    /// than the installed version only when `allow_downgrade`.
    Package {
        sha256: String,
        allow_downgrade: bool,
    },
    /// A kept backup: the one named `file`, or the newest of `version`, or
    /// the newest of another version than the installed one.
    /// `keep_database`: a database module's files only.
    Backup {
        version: Option<String>,
        file: Option<String>,
        keep_database: bool,
    },
}

/// A restore of a kept backup, and what it does to a database.
#[derive(Debug, Clone, Copy)]
pub(super) struct Restoring {
    pub(super) keep_database: bool,
}

/// Where the bytes come from, once resolved.
#[derive(Debug, Clone)]
pub(super) enum Resolved {
    Package {
        path: PathBuf,
        sha256: String,
        allow_downgrade: bool,
    },
    Backup {
        path: PathBuf,
        keep_database: bool,
    },
}

/// What `source` names for `module`, checked: the package or backup, and
/// the version it installs.
pub(super) fn resolve(
    agent: &Agent,
    declaration: &ModuleDeclaration,
    source: Source,
    expected_version: Option<String>,
) -> Result<(Resolved, String), StartError> {
    let module = declaration.name.as_str();
    match source {
        Source::Package { .. } | Source::Pending => {
            resolve_package(agent, module, source, expected_version)
        }
        Source::Backup {
            version,
            file,
            keep_database,
        } => {
            let installed = installed_version(declaration, agent.settings.layout.root());
            let kept = backups(agent, module)
                .into_iter()
                .filter(|kept| file.as_ref().is_none_or(|file| &kept.file == file))
                .find(|kept| match &version {
                    Some(wanted) => Version::parse(wanted).is_ok_and(|w| w == kept.version),
                    None => file.is_some() || installed.as_ref() != Some(&kept.version),
                })
                .ok_or_else(|| StartError::NoBackup {
                    module: module.to_owned(),
                    version: file.clone().or(version.clone()),
                })?;
            Ok((
                Resolved::Backup {
                    path: kept.path,
                    keep_database,
                },
                kept.version.to_string(),
            ))
        }
    }
}

/// The package `source` names for `module` (a package by its sha256, or
/// the pending one, `expected_version` if given), checked: trusted.
pub(super) fn resolve_package(
    agent: &Agent,
    module: &str,
    source: Source,
    expected_version: Option<String>,
) -> Result<(Resolved, String), StartError> {
    match source {
        Source::Package {
            sha256,
            allow_downgrade,
        } => {
            let trust = agent.trust();
            let wanted = sha256.trim().to_ascii_lowercase();
            let found = packages_in(&agent.settings.layout.packages_dir(), &trust)
                .into_iter()
                .find(|p| p.module == module && p.sha256.eq_ignore_ascii_case(&wanted))
                .ok_or_else(|| StartError::NoSuchPackage {
                    module: module.to_owned(),
                    sha256: wanted.chars().take(64).collect(),
                })?;
            if let Some(why) = trust.refusal(&found.trust) {
                return Err(StartError::NotTrusted {
                    module: module.to_owned(),
                    version: found.version.to_string(),
                    why,
                });
            }
            let to = found.version.to_string();
            let resolved = Resolved::Package {
                path: found.package,
                sha256: found.sha256,
                allow_downgrade,
            };
            Ok((resolved, to))
        }
        Source::Pending => {
            let pending = pending(&agent.settings.layout, &agent.trust())
                .into_iter()
                .find(|p| p.module == module)
                .ok_or_else(|| StartError::NothingPending(module.to_owned()))?;
            if let Some(expected) = expected_version
                && Version::parse(&expected).ok().as_ref() != Some(&pending.version)
            {
                return Err(StartError::NotThatVersion {
                    module: module.to_owned(),
                    pending: pending.version.to_string(),
                    expected,
                });
            }
            let to = pending.version.to_string();
            let resolved = Resolved::Package {
                path: pending.package,
                sha256: pending.sha256,
                allow_downgrade: false,
            };
            Ok((resolved, to))
        }
        Source::Backup { .. } => Err(StartError::NoBackup {
            module: module.to_owned(),
            version: None,
        }),
    }
}
