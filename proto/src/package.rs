//! Module packages: a zip holding `flotilla-package.toml` (the manifest) and
//! the module's files under `files/`.
//!
//! Everything that can be refused is refused here, before any downtime: a
//! wrong checksum, a corrupt or truncated zip, a package for another module or
//! kind, entries that would escape the staging folder (absolute paths, `..`,
//! links), and anything that would unpack beyond the size or ratio limits.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::domain::{ModuleKind, ModuleName, Version};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use zip::ZipArchive;

/// The manifest's name at the root of the zip.
pub const MANIFEST: &str = "flotilla-package.toml";
/// The folder of the zip holding the module's files.
pub const PAYLOAD: &str = "files/";

/// What a package says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub module: ModuleName,
    pub version: Version,
    pub kind: ModuleKind,
    /// Paths (relative to the module folder) carried over from the installed
    /// version, e.g. a customer's `web.config`.
    pub preserve: Vec<String>,
    pub health_check: Option<HealthCheck>,
    /// A database package's upgrade scripts, in the order they run: names of
    /// files under `scripts/` in the zip (never unpacked into the module).
    pub upgrade_scripts: Vec<String>,
    /// A database package's engine and the version its scripts upgrade
    /// from; the standard schemas of both versions are under `standard/`.
    pub database: Option<DatabaseSection>,
    /// An agent package's platform (`linux-x86_64`, `windows-x86_64`): an
    /// agent takes only the one built for its own.
    pub platform: Option<String>,
}

/// The `[database]` table of a database package's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSection {
    /// `postgres` or `sqlite`.
    pub engine: String,
    /// The version the scripts upgrade from.
    pub from_version: Version,
}

/// The folder of the zip holding a database package's upgrade scripts.
pub const SCRIPTS: &str = "scripts/";

/// The folder of the zip holding a database package's standard schema
/// fingerprints: `from.json` (of `from_version`) and `to.json` (of this
/// version), as the package builder computed them on a scratch database.
pub const STANDARD: &str = "standard/";

/// How to tell the new version works once back in service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Must answer 2xx.
    pub url: String,
    pub timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    module: String,
    version: String,
    kind: String,
    #[serde(default)]
    preserve: Vec<String>,
    health_check: Option<HealthCheckFile>,
    #[serde(default)]
    upgrade_scripts: Vec<String>,
    database: Option<DatabaseFile>,
    platform: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseFile {
    engine: String,
    from_version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheckFile {
    url: String,
    #[serde(default = "default_health_timeout")]
    timeout_seconds: u64,
}

fn default_health_timeout() -> u64 {
    60
}

/// Bounds on what a package may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes once unpacked.
    pub max_unpacked_bytes: u64,
    /// Uncompressed / compressed, for entries over 1 MiB.
    pub max_ratio: u64,
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_unpacked_bytes: 16 << 30,
            max_ratio: 100,
            max_entries: 200_000,
        }
    }
}

/// Why a package was refused. Every message names the package.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("cannot read package {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("package {path} has sha256 {actual}, expected {expected}: refused")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("package {path} is not a readable zip (truncated or corrupt): {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("package {path} has no {MANIFEST} at its root")]
    NoManifest { path: PathBuf },
    #[error("package {path}: {MANIFEST} is not valid: {message}")]
    BadManifest { path: PathBuf, message: String },
    #[error("package {path} is for module {found}, not {expected}: refused")]
    WrongModule {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error(
        "package {path} is a {found} package but module {module} is a {expected} module: refused"
    )]
    WrongKind {
        path: PathBuf,
        module: String,
        expected: ModuleKind,
        found: ModuleKind,
    },
    #[error("package {path}: entry \"{entry}\" is refused: {why}")]
    UnsafeEntry {
        path: PathBuf,
        entry: String,
        why: String,
    },
    #[error("package {path} would unpack beyond the limit: {why}")]
    TooLarge { path: PathBuf, why: String },
    #[error("cannot unpack package {path} into {dir}: {message}")]
    Unpack {
        path: PathBuf,
        dir: PathBuf,
        message: String,
    },
}

/// The sha256 of a file, in lowercase hex, read in a streaming fashion.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A verified package: its checksum matched and its manifest is valid.
#[derive(Debug, Clone)]
pub struct Package {
    pub path: PathBuf,
    pub sha256: String,
    pub manifest: Manifest,
    /// The folder of the zip holding the module's files: `files/` in a
    /// package, the root in a backup.
    payload: &'static str,
}

impl Package {
    /// A text file of the zip.
    fn text(&self, name: &str) -> Result<String, PackageError> {
        let bad = |message: String| PackageError::BadManifest {
            path: self.path.clone(),
            message,
        };
        let mut zip = archive(&self.path)?;
        let mut entry = zip
            .by_name(name)
            .map_err(|_| bad(format!("{name} is not in the package")))?;
        let mut text = String::new();
        io::Read::read_to_string(&mut entry, &mut text)
            .map_err(|e| bad(format!("{name} cannot be read as UTF-8 text: {e}")))?;
        Ok(text)
    }

    /// The upgrade scripts, (name, content), in the order they run.
    pub fn scripts(&self) -> Result<Vec<(String, String)>, PackageError> {
        self.manifest
            .upgrade_scripts
            .iter()
            .map(|name| Ok((name.clone(), self.text(&format!("{SCRIPTS}{name}"))?)))
            .collect()
    }

    /// A standard schema fingerprint (`from` or `to`), as JSON.
    pub fn standard(&self, which: &str) -> Result<String, PackageError> {
        self.text(&format!("{STANDARD}{which}.json"))
    }

    /// Checks the checksum, opens the zip and reads the manifest.
    pub fn open(path: &Path, expected_sha256: &str) -> Result<Package, PackageError> {
        let read_error = |source| PackageError::Read {
            path: path.to_path_buf(),
            source,
        };
        let actual = sha256_file(path).map_err(read_error)?;
        let expected = expected_sha256.trim().to_ascii_lowercase();
        if actual != expected {
            return Err(PackageError::Checksum {
                path: path.to_path_buf(),
                expected,
                actual,
            });
        }
        let manifest = read_manifest(path)?;
        // Every upgrade script the manifest lists must be in the zip.
        let mut zip = archive(path)?;
        for script in &manifest.upgrade_scripts {
            if zip.by_name(&format!("{SCRIPTS}{script}")).is_err() {
                return Err(PackageError::BadManifest {
                    path: path.to_path_buf(),
                    message: format!("upgrade_scripts lists {script}, which is not in {SCRIPTS}"),
                });
            }
        }
        if manifest.database.is_some() {
            for which in ["from.json", "to.json"] {
                if zip.by_name(&format!("{STANDARD}{which}")).is_err() {
                    return Err(PackageError::BadManifest {
                        path: path.to_path_buf(),
                        message: format!(
                            "a [database] package needs {STANDARD}{which}, the standard schema the package builder computes"
                        ),
                    });
                }
            }
        }
        Ok(Package {
            path: path.to_path_buf(),
            sha256: actual,
            manifest,
            payload: PAYLOAD,
        })
    }

    /// A backup zip made by an earlier install, as a package restoring the
    /// version named in its file name (`<module>_<version>_<time>.zip`).
    pub fn from_backup(
        path: &Path,
        module: &ModuleName,
        kind: ModuleKind,
    ) -> Result<Package, PackageError> {
        let bad = |message: String| PackageError::BadManifest {
            path: path.to_path_buf(),
            message,
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let version = name
            .strip_prefix(&format!("{module}_"))
            .and_then(|rest| rest.strip_suffix(".zip"))
            .and_then(|rest| rest.rsplit_once('_'))
            .map(|(version, _time)| version)
            .ok_or_else(|| {
                bad(format!(
                    "not a backup of {module}: expected {module}_<version>_<time>.zip"
                ))
            })?;
        let version = Version::parse(version).map_err(|e| bad(e.to_string()))?;
        let sha256 = sha256_file(path).map_err(|source| PackageError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        archive(path)?;
        Ok(Package {
            path: path.to_path_buf(),
            sha256,
            manifest: Manifest {
                module: module.clone(),
                version,
                kind,
                preserve: Vec::new(),
                health_check: None,
                upgrade_scripts: Vec::new(),
                database: None,
                platform: None,
            },
            payload: "",
        })
    }

    /// The bytes the module's files take once unpacked, as the zip declares.
    pub fn unpacked_size(&self) -> Result<u64, PackageError> {
        let mut archive = archive(&self.path)?;
        let mut total = 0u64;
        for index in 0..archive.len() {
            let entry = archive
                .by_index_raw(index)
                .map_err(|e| PackageError::Corrupt {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?;
            total = total.saturating_add(entry.size());
        }
        Ok(total)
    }

    /// Refuses a package meant for another module or kind.
    pub fn check_target(&self, module: &ModuleName, kind: ModuleKind) -> Result<(), PackageError> {
        if &self.manifest.module != module {
            return Err(PackageError::WrongModule {
                path: self.path.clone(),
                expected: module.to_string(),
                found: self.manifest.module.to_string(),
            });
        }
        if self.manifest.kind != kind {
            return Err(PackageError::WrongKind {
                path: self.path.clone(),
                module: module.to_string(),
                expected: kind,
                found: self.manifest.kind,
            });
        }
        Ok(())
    }

    /// Unpacks the module's files into `dir`, which must not exist. Every
    /// entry is checked before the first byte is written; on any error `dir`
    /// is removed again. Returns the bytes and files written.
    pub fn unpack(&self, dir: &Path, limits: Limits) -> Result<(u64, u64), PackageError> {
        let mut archive = archive(&self.path)?;
        let entries = self.plan(&mut archive, limits)?;
        let unpack_error = |message: String| PackageError::Unpack {
            path: self.path.clone(),
            dir: dir.to_path_buf(),
            message,
        };
        std::fs::create_dir(dir).map_err(|e| unpack_error(e.to_string()))?;
        let result = (|| {
            let mut bytes = 0u64;
            let mut files = 0u64;
            for (index, relative, declared) in entries {
                let target = dir.join(&relative);
                let mut entry = archive
                    .by_index(index)
                    .map_err(|e| unpack_error(e.to_string()))?;
                if entry.is_dir() {
                    std::fs::create_dir_all(&target).map_err(|e| unpack_error(e.to_string()))?;
                    continue;
                }
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| unpack_error(e.to_string()))?;
                }
                let mut out = File::create_new(&target)
                    .map_err(|e| unpack_error(format!("{}: {e}", relative.display())))?;
                // Never trust the declared size: read at most one byte more.
                let written =
                    io::copy(&mut (&mut entry).take(declared + 1), &mut out).map_err(|e| {
                        unpack_error(format!(
                            "{}: {e} (truncated or corrupt entry)",
                            relative.display()
                        ))
                    })?;
                if written != declared {
                    return Err(PackageError::TooLarge {
                        path: self.path.clone(),
                        why: format!(
                            "entry \"{}\" holds more than its declared {declared} bytes",
                            relative.display()
                        ),
                    });
                }
                out.flush().map_err(|e| unpack_error(e.to_string()))?;
                bytes += written;
                files += 1;
            }
            Ok((bytes, files))
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(dir);
        }
        result
    }

    /// Checks every entry; returns (index, relative path under `files/`, size).
    fn plan(
        &self,
        archive: &mut ZipArchive<File>,
        limits: Limits,
    ) -> Result<Vec<(usize, PathBuf, u64)>, PackageError> {
        if archive.len() > limits.max_entries {
            return Err(PackageError::TooLarge {
                path: self.path.clone(),
                why: format!(
                    "{} entries, the limit is {}",
                    archive.len(),
                    limits.max_entries
                ),
            });
        }
        let mut total = 0u64;
        let mut planned = Vec::with_capacity(archive.len());
        for index in 0..archive.len() {
            let entry = archive
                .by_index_raw(index)
                .map_err(|e| PackageError::Corrupt {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?;
            let name =
                entry
                    .name()
                    .map(|n| n.into_owned())
                    .map_err(|e| PackageError::UnsafeEntry {
                        path: self.path.clone(),
                        entry: format!("#{index}"),
                        why: format!("its name cannot be read: {e}"),
                    })?;
            let refuse = |why: &str| PackageError::UnsafeEntry {
                path: self.path.clone(),
                entry: name.clone(),
                why: why.to_owned(),
            };
            let Some(enclosed) = entry.enclosed_name() else {
                return Err(refuse("absolute path or '..' escaping the package"));
            };
            if entry.is_symlink() {
                return Err(refuse("links are not allowed"));
            }
            if self.payload == PAYLOAD
                && (name == MANIFEST || name.starts_with(SCRIPTS) || name.starts_with(STANDARD))
            {
                continue;
            }
            let Ok(relative) = enclosed.strip_prefix(self.payload.trim_end_matches('/')) else {
                return Err(refuse("the module's files must be under files/"));
            };
            if relative.as_os_str().is_empty() {
                continue;
            }
            let size = entry.size();
            let compressed = entry.compressed_size().max(1);
            if size > 1 << 20 && size / compressed > limits.max_ratio {
                return Err(PackageError::TooLarge {
                    path: self.path.clone(),
                    why: format!(
                        "entry \"{name}\" expands {}:1, the limit is {}:1 (zip bomb?)",
                        size / compressed,
                        limits.max_ratio
                    ),
                });
            }
            total = total.saturating_add(size);
            if total > limits.max_unpacked_bytes {
                return Err(PackageError::TooLarge {
                    path: self.path.clone(),
                    why: format!(
                        "more than {} bytes once unpacked",
                        limits.max_unpacked_bytes
                    ),
                });
            }
            planned.push((index, relative.to_path_buf(), size));
        }
        Ok(planned)
    }
}

/// Reads a package's manifest without checking its checksum: enough to list
/// it, never enough to install it.
pub fn read_manifest(path: &Path) -> Result<Manifest, PackageError> {
    let mut archive = archive(path)?;
    let mut text = String::new();
    match archive.by_name(MANIFEST) {
        Ok(mut entry) => {
            if entry.size() > 64 * 1024 {
                return Err(PackageError::BadManifest {
                    path: path.to_path_buf(),
                    message: "larger than 64 KiB".into(),
                });
            }
            entry
                .read_to_string(&mut text)
                .map_err(|e| PackageError::Corrupt {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        }
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(PackageError::NoManifest {
                path: path.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(PackageError::Corrupt {
                path: path.to_path_buf(),
                message: e.to_string(),
            });
        }
    }
    parse_manifest(&text).map_err(|message| PackageError::BadManifest {
        path: path.to_path_buf(),
        message,
    })
}

fn archive(path: &Path) -> Result<ZipArchive<File>, PackageError> {
    let file = File::open(path).map_err(|source| PackageError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    ZipArchive::new(file).map_err(|e| PackageError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn parse_manifest(text: &str) -> Result<Manifest, String> {
    let file: ManifestFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let module = ModuleName::parse(&file.module).map_err(|e| format!("module: {e}"))?;
    let version = Version::parse(&file.version).map_err(|e| format!("version: {e}"))?;
    let kind = ModuleKind::parse_package(&file.kind).map_err(|e| format!("kind: {e}"))?;
    for path in &file.preserve {
        let p = Path::new(path);
        if path.is_empty() || p.is_absolute() || path.split(['/', '\\']).any(|part| part == "..") {
            return Err(format!(
                "preserve: \"{path}\" must be a path inside the module folder"
            ));
        }
    }
    for script in &file.upgrade_scripts {
        if script.is_empty() || script.contains(['/', '\\']) || script == ".." {
            return Err(format!(
                "upgrade_scripts: \"{script}\" must be a file name under {SCRIPTS}"
            ));
        }
    }
    if !file.upgrade_scripts.is_empty() && kind != ModuleKind::Database {
        return Err("upgrade_scripts belong to database packages (kind = \"database\")".into());
    }
    let database = match file.database {
        None => None,
        Some(_) if kind != ModuleKind::Database => {
            return Err("[database] belongs to database packages (kind = \"database\")".into());
        }
        Some(d) => {
            if !matches!(d.engine.as_str(), "postgres" | "sqlite") {
                return Err(format!(
                    "database.engine: \"{}\" is not an engine Flotilla knows (postgres, sqlite)",
                    d.engine
                ));
            }
            Some(DatabaseSection {
                engine: d.engine,
                from_version: Version::parse(&d.from_version)
                    .map_err(|e| format!("database.from_version: {e}"))?,
            })
        }
    };
    let health_check = match file.health_check {
        Some(check) => {
            if !(check.url.starts_with("http://") || check.url.starts_with("https://")) {
                return Err(format!(
                    "health_check.url \"{}\" must start with http:// or https://",
                    check.url
                ));
            }
            Some(HealthCheck {
                url: check.url,
                timeout: Duration::from_secs(check.timeout_seconds.max(1)),
            })
        }
        None => None,
    };
    check_platform(&module, kind, file.platform.as_deref())?;
    Ok(Manifest {
        module,
        version,
        kind,
        preserve: file.preserve,
        health_check,
        upgrade_scripts: file.upgrade_scripts,
        database,
        platform: file.platform,
    })
}

/// Builds package zips; used by tests and benchmarks here, and by the
/// release tooling later.
pub mod build {
    use std::fs::File;
    use std::io::{self, Write};
    use std::path::Path;

    use zip::write::SimpleFileOptions;

    /// Writes a package with `manifest` and the given `(path, content)` files.
    pub fn from_entries(
        zip_path: &Path,
        manifest: &str,
        files: &[(&str, &[u8])],
    ) -> io::Result<()> {
        from_entries_at_level(zip_path, manifest, files, 1)
    }

    /// Like [`from_entries`], at a given deflate level (1 to 9).
    pub fn from_entries_at_level(
        zip_path: &Path,
        manifest: &str,
        files: &[(&str, &[u8])],
        level: i64,
    ) -> io::Result<()> {
        let mut zip = zip::ZipWriter::new(File::create(zip_path)?);
        let options = SimpleFileOptions::default().compression_level(Some(level));
        zip.start_file(super::MANIFEST, options)
            .map_err(io::Error::other)?;
        zip.write_all(manifest.as_bytes())?;
        for (path, content) in files {
            zip.start_file(format!("{}{path}", super::PAYLOAD), options)
                .map_err(io::Error::other)?;
            zip.write_all(content)?;
        }
        zip.finish().map_err(io::Error::other)?;
        Ok(())
    }

    /// Writes a database package: `manifest`, every file under `folder`, the
    /// given upgrade scripts (name, content) under `scripts/`, and the
    /// standard schemas (name, content) under `standard/`.
    pub fn with_scripts(
        zip_path: &Path,
        manifest: &str,
        folder: &Path,
        scripts: &[(String, Vec<u8>)],
        standards: &[(String, Vec<u8>)],
    ) -> io::Result<()> {
        let mut zip = zip::ZipWriter::new(io::BufWriter::new(File::create(zip_path)?));
        let options = SimpleFileOptions::default().compression_level(Some(1));
        zip.start_file(super::MANIFEST, options)
            .map_err(io::Error::other)?;
        zip.write_all(manifest.as_bytes())?;
        add_tree(&mut zip, folder, super::PAYLOAD, options)?;
        for (name, content) in scripts {
            zip.start_file(format!("{}{name}", super::SCRIPTS), options)
                .map_err(io::Error::other)?;
            zip.write_all(content)?;
        }
        for (name, content) in standards {
            zip.start_file(format!("{}{name}", super::STANDARD), options)
                .map_err(io::Error::other)?;
            zip.write_all(content)?;
        }
        zip.finish().map_err(io::Error::other)?.flush()?;
        Ok(())
    }

    /// Writes a package with `manifest` and every file under `folder`.
    pub fn from_folder(zip_path: &Path, manifest: &str, folder: &Path) -> io::Result<()> {
        let mut zip = zip::ZipWriter::new(io::BufWriter::new(File::create(zip_path)?));
        let options = SimpleFileOptions::default().compression_level(Some(1));
        zip.start_file(super::MANIFEST, options)
            .map_err(io::Error::other)?;
        zip.write_all(manifest.as_bytes())?;
        add_tree(&mut zip, folder, super::PAYLOAD, options)?;
        zip.finish().map_err(io::Error::other)?.flush()?;
        Ok(())
    }

    /// Adds every folder and file under `folder` to `zip`, named `prefix` +
    /// their path relative to `folder` with `/` separators, in a stable order.
    /// Returns the bytes of file content added.
    pub fn add_tree<W: Write + io::Seek>(
        zip: &mut zip::ZipWriter<W>,
        folder: &Path,
        prefix: &str,
        options: SimpleFileOptions,
    ) -> io::Result<u64> {
        let mut total = 0u64;
        let mut stack = vec![folder.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let path = entry.path();
                let relative = path
                    .strip_prefix(folder)
                    .map_err(io::Error::other)?
                    .to_string_lossy()
                    .replace('\\', "/");
                let file_type = entry.file_type()?;
                if file_type.is_dir() {
                    zip.add_directory(format!("{prefix}{relative}/"), options)
                        .map_err(io::Error::other)?;
                    stack.push(path);
                } else if file_type.is_file() {
                    let size = entry.metadata()?.len();
                    zip.start_file(
                        format!("{prefix}{relative}"),
                        options.large_file(size >= u64::from(u32::MAX)),
                    )
                    .map_err(io::Error::other)?;
                    total += io::copy(&mut File::open(&path)?, zip)?;
                }
            }
        }
        Ok(total)
    }
}

/// Flotilla's own agent is the module flotilla-agent, of kind agent, built
/// for one platform (`linux-x86_64`, `windows-x86_64`); nothing else is, and
/// nothing else names a platform.
pub fn check_platform(
    module: &ModuleName,
    kind: ModuleKind,
    platform: Option<&str>,
) -> Result<(), String> {
    let agent = module.as_str() == crate::domain::AGENT_MODULE;
    match (agent, kind == ModuleKind::Agent, platform) {
        (true, false, _) | (false, true, _) => Err(format!(
            "module {module} of kind {kind}: the module {} is of kind agent, and only it",
            crate::domain::AGENT_MODULE
        )),
        (true, true, None) => Err("platform: an agent package names the platform it was built for (linux-x86_64, windows-x86_64)".into()),
        (false, false, Some(_)) => Err("platform belongs to agent packages (kind = \"agent\")".into()),
        (_, _, Some(p))
            if p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')) =>
        {
            Err(format!(
                "platform: \"{p}\" is not a platform name such as linux-x86_64"
            ))
        }
        _ => Ok(()),
    }
}
