//! The agent's own versions, side by side, and the one its service runs.

use std::path::{Path, PathBuf};

use crate::config::DataLayout;

/// The agent's executable, in each version's folder.
pub const EXE: &str = if cfg!(windows) {
    "flotilla-agent.exe"
} else {
    "flotilla-agent"
};

/// `<data>/bin/agent/`: the agent's own versions and its trial.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn of(layout: &DataLayout) -> Home {
        Home {
            root: layout.root().join("bin").join("agent"),
        }
    }

    pub fn versions(&self) -> PathBuf {
        self.root.join("versions")
    }

    /// The executable of `version`.
    pub fn exe(&self, version: &str) -> PathBuf {
        self.versions().join(version).join(EXE)
    }

    /// Linux: the link the service runs through.
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }

    /// Windows: the file naming the version the service runs (the service
    /// control manager runs that version's executable itself).
    pub(super) fn current_file(&self) -> PathBuf {
        self.root.join("current.txt")
    }

    pub(super) fn trial_file(&self) -> PathBuf {
        self.root.join("trial.json")
    }

    pub(super) fn outcome_file(&self) -> PathBuf {
        self.root.join("last-update.json")
    }

    /// The version the service runs: `current`'s on Linux, `current.txt`'s
    /// on Windows.
    pub fn current_version(&self) -> Option<String> {
        if cfg!(unix) {
            let target = std::fs::read_link(self.current()).ok()?;
            Some(target.file_name()?.to_string_lossy().into_owned())
        } else {
            let text = std::fs::read_to_string(self.current_file()).ok()?;
            Some(text.trim().to_owned()).filter(|v| !v.is_empty())
        }
    }

    /// The executable the service runs: through `current` on Linux (so
    /// that a switch of the link is enough), the current version's own on
    /// Windows.
    pub fn service_exe(&self) -> PathBuf {
        match (cfg!(unix), self.current_version()) {
            (false, Some(version)) => self.exe(&version),
            _ => self.current().join(EXE),
        }
    }

    /// Whether this process runs from one of the versions' folders (so a
    /// service that runs `current` can be pointed at another).
    pub fn runs_this_process(&self) -> bool {
        let (Ok(exe), Ok(versions)) = (
            std::env::current_exe().and_then(std::fs::canonicalize),
            std::fs::canonicalize(self.versions()),
        ) else {
            return false;
        };
        exe.starts_with(versions)
    }

    /// Copies the executable `exe` in as this build's version, and makes it
    /// the current one when none is yet; the executable a service should
    /// run ([`Home::service_exe`]).
    pub fn adopt(&self, exe: &Path) -> std::io::Result<PathBuf> {
        let target = self.exe(crate::VERSION);
        if !target.exists() {
            std::fs::create_dir_all(self.versions().join(crate::VERSION))?;
            let partial = target.with_extension("partial");
            std::fs::copy(exe, &partial)?;
            std::fs::rename(&partial, &target)?;
        }
        if self.current_version().is_none() {
            self.point_at(crate::VERSION)?;
        }
        Ok(self.service_exe())
    }

    /// Makes `version` the current one, in one rename: the `current` link
    /// on Linux; on Windows `current.txt`, once the service control manager
    /// runs that version ([`point_service_at`]).
    pub(super) fn point_at(&self, version: &str) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            let link = self.root.join("current.new");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(Path::new("versions").join(version), &link)?;
            std::fs::rename(&link, self.current())?;
            std::fs::File::open(&self.root)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            use std::io::Write;
            let written = self.root.join("current.txt.new");
            let mut file = std::fs::File::create(&written)?;
            file.write_all(format!("{version}\n").as_bytes())?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&written, self.current_file())
        }
    }
}

/// Windows: the agent's service, when it is registered, is pointed at
/// `version`'s executable through the service control manager (its start
/// mode, account and recovery actions kept); run by hand, nothing is
/// registered and there is nothing to point.
#[cfg(windows)]
pub(super) fn point_service_at(home: &Home, config: &Path, version: &str) -> Result<(), String> {
    use flotilla_proto::service;
    let mut spec =
        crate::service_spec::service_spec(config, PathBuf::new()).map_err(|e| e.to_string())?;
    if service::find(spec.name, Path::new("")) == service::Found::NotInstalled {
        tracing::info!("no agent service is registered: nothing to point at {version}");
        return Ok(());
    }
    spec.executable = home.exe(version);
    let said = service::windows::repoint(&spec).map_err(|e| e.to_string())?;
    tracing::info!("{said}");
    Ok(())
}
