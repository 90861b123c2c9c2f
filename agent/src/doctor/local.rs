//! The checks that need only the settings and the disk: what
//! `applicationspath.config` declares against what is there, the data
//! folders' rights, the hooks, leftovers of an interrupted install, files
//! held open, free space for the pending packages, the journal.

use std::path::{Path, PathBuf};

use flotilla_proto::doctor::Check;
use flotilla_proto::domain::ModuleState;

use crate::applications::{self, ModuleDeclaration};
use crate::config::Settings;
use crate::install::{hooks, journal, platform};
use crate::inventory::{self, Inventory, MAINTENANCE_PAGES};
use crate::pending::PackageTrust;

/// `applicationspath.config` exists, parses, and matches the disk.
pub fn applications(settings: &Settings, inventory: &Inventory) -> Vec<Check> {
    let file = settings.layout.applications_config();
    let subject = file.display().to_string();
    let declarations = applications::load(&file);
    let mut checks = Vec::new();
    for problem in &declarations.problems {
        checks.push(Check::fail(
            "applications",
            &subject,
            match problem.line {
                Some(line) => format!("line {line}: {}", problem.message),
                None => problem.message.clone(),
            },
            "fix the file: one <application name=\"…\" kind=\"web|service|database\" path=\"…\"/> per module of this server (see the README)",
        ));
    }
    for module in &inventory.modules {
        let name = module.name.as_str();
        match module.state {
            ModuleState::Missing => checks.push(Check::fail(
                "applications",
                name,
                module.detail.clone(),
                format!("install the module there, or correct its path in {subject}, or remove its node if it does not run on this server"),
            )),
            ModuleState::VersionUnknown => checks.push(Check::fail(
                "applications",
                name,
                module.detail.clone(),
                "the version file must hold the module's version on its first line (e.g. 5.8.0): restore it from the last backup, or reinstall the module",
            )),
            ModuleState::Installed | ModuleState::Maintenance => {}
        }
    }
    for folder in undeclared(settings, &declarations.modules) {
        checks.push(Check::warn(
            "applications",
            folder.display().to_string(),
            "looks like a module (it has a version.txt beside the declared modules) but is not declared: Flotilla neither reports nor updates it",
            format!("declare it in {subject} if it runs here, or remove the folder"),
        ));
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            "applications",
            subject,
            format!(
                "{} module(s) declared, each found with its version",
                inventory.modules.len()
            ),
        ));
    }
    checks
}

/// Folders beside the declared modules' folders that look like modules
/// (a `version.txt` inside) and are not declared.
fn undeclared(settings: &Settings, declared: &[ModuleDeclaration]) -> Vec<PathBuf> {
    let root = settings.layout.root();
    let dirs: Vec<PathBuf> = declared.iter().map(|d| d.install_dir(root)).collect();
    let mut parents: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| d.parent().map(Path::to_path_buf))
        .collect();
    parents.sort();
    parents.dedup();
    let mut found = Vec::new();
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if !hidden
                && path.is_dir()
                && path.join(applications::DEFAULT_VERSION_FILE).is_file()
                && !dirs.contains(&path)
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The folders the agent writes to, by the account this runs as:
/// `as_agent` when that is the agent's own (the doctor run in the agent).
pub fn folders(settings: &Settings, as_agent: bool) -> Vec<Check> {
    let identity = identity();
    let who = if as_agent {
        ", the account the agent runs as"
    } else {
        " (the account this command runs as; run it as the agent's account to check the agent's rights)"
    };
    let updates = settings.layout.updates_dir();
    let mut folders = vec![
        (updates.clone(), "status.xml"),
        (settings.layout.packages_dir(), "the downloaded packages"),
        (
            settings.install.backup_dir.clone(),
            "the backups (E_BACKUP_PATH)",
        ),
        (
            settings.install.journal_dir.clone(),
            "the installs' journal",
        ),
        (settings.layout.identity_dir(), "the agent's certificate"),
    ];
    folders.dedup_by(|a, b| a.0 == b.0);
    folders
        .into_iter()
        .map(|(folder, holds)| match writable(&folder) {
            Ok(()) => Check::ok(
                "folders",
                folder.display().to_string(),
                format!("writable by {identity}{who} ({holds})"),
            ),
            Err(e) => Check::fail(
                "folders",
                folder.display().to_string(),
                format!("not writable by {identity}{who}: {e}"),
                format!(
                    "give {identity} modify rights on {} ({holds}); without them no version can be downloaded or installed",
                    folder.display()
                ),
            )
            .blocking(),
        })
        .collect()
}

/// The agent's secrets (its identity folder, its key and certificate, the
/// portal's local token): a FAIL when anyone but the agent's account and
/// the administrators can read one (on Windows, Users under
/// `%PROGRAMDATA%` by inheritance; on Unix, a group or other mode bit).
pub fn secrets(settings: &Settings) -> Vec<Check> {
    let layout = &settings.layout;
    [
        (layout.identity_dir(), "the agent's identity folder"),
        (layout.identity_file(), "the agent's key and certificate"),
        (layout.portal_token_file(), "the portal's local token"),
    ]
    .into_iter()
    .filter(|(path, _)| path.exists())
    .map(|(path, what)| match flotilla_proto::acl::readable_by_others(&path) {
        Ok(None) => Check::ok(
            "secrets",
            path.display().to_string(),
            format!("{what}: readable by the agent's account and the administrators only"),
        ),
        Ok(Some(grant)) => Check::fail(
            "secrets",
            path.display().to_string(),
            format!("{what}: other users can read it ({grant})"),
            "restart the agent (it closes it to others at start), or restrict it to SYSTEM, Administrators and the agent's account (Unix: chmod go-rwx); whoever read the key can pose as this server: revoke it on the dashboard and enroll the server again",
        ),
        Err(e) => Check::warn(
            "secrets",
            path.display().to_string(),
            format!("{what}: its permissions cannot be read: {e}"),
            "run the doctor as the agent's account (root, or an administrator)",
        ),
    })
    .collect()
}

/// Makes a file in the folder and removes it; a folder not made yet is
/// judged by its nearest existing parent, where the agent would make it.
/// Leaves nothing behind.
fn writable(folder: &Path) -> std::io::Result<()> {
    let mut at = folder;
    while !at.exists() {
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    if !at.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a folder",
            at.display()
        )));
    }
    // A name of its own (two doctors may run at once), made new, and gone
    // again at once: nothing is left behind.
    let random = flotilla_proto::web::random_secret();
    let probe = at.join(format!(".flotilla-doctor-{}", &random[..16]));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The account this process runs as.
pub fn identity() -> String {
    #[cfg(target_os = "linux")]
    if let Some(name) = linux_user() {
        return name;
    }
    let user = std::env::var("USERNAME")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "this account".to_owned());
    match std::env::var("USERDOMAIN") {
        Ok(domain) if cfg!(windows) => format!("{domain}\\{user}"),
        _ => user,
    }
}

/// The effective user's name, from `/proc/self/status` and `/etc/passwd`.
#[cfg(target_os = "linux")]
fn linux_user() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(':').collect();
        (fields.get(2) == Some(&uid.as_str())).then(|| fields[0].to_owned())
    });
    Some(match name {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    })
}

/// Hooks whose names run nothing, and hooks this server cannot run.
/// `only`: the modules whose hooks must be runnable (a preflight's).
pub fn hooks(
    settings: &Settings,
    inventory: &Inventory,
    only: &(dyn Fn(&str) -> bool + Sync),
) -> Vec<Check> {
    let scripts = &settings.install.scripts_dir;
    let names: Vec<&str> = inventory.modules.iter().map(|m| m.name.as_str()).collect();
    let mut checks: Vec<Check> = crate::hook_names::problems(scripts, &names)
        .into_iter()
        .map(|p| {
            let file = p.file.unwrap_or_default();
            let fix = match p.message.split("did you mean ").nth(1) {
                Some(meant) => {
                    format!("rename it for {}", meant.split('?').next().unwrap_or(meant))
                }
                None => "rename it <PHASE>_<module>.<ext>, or remove it".to_owned(),
            };
            Check::warn("hooks", file, p.message, fix).blocking()
        })
        .collect();
    let powershell = settings.install.powershell.as_deref();
    for module in names.iter().filter(|m| only(m)) {
        for phase in hooks::Phase::ALL {
            for script in hooks::find(scripts, phase, module) {
                if let Some(why) = hooks::unrunnable(&script, powershell) {
                    checks.push(
                        Check::fail(
                            "hooks",
                            script.display().to_string(),
                            format!("the hook {why}: the install of {module} would fail at {phase}"),
                            if why.contains("PowerShell") {
                                "install PowerShell, or set `powershell` in the agent's configuration"
                            } else {
                                "rewrite the hook for this server's shell (.ps1, .cmd or .bat on Windows; .sh on Linux)"
                            },
                        )
                        .blocking(),
                    );
                }
            }
        }
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            "hooks",
            scripts.display().to_string(),
            "every hook names a phase and a module of this server, and can run here",
        ));
    }
    checks
}

/// Maintenance pages, `.bak` files and folders set aside that an
/// interrupted install left.
pub fn leftovers(settings: &Settings) -> Vec<Check> {
    let root = settings.layout.root();
    let declarations = applications::load(&settings.layout.applications_config());
    let mut checks = Vec::new();
    for declaration in &declarations.modules {
        let dir = declaration.install_dir(root);
        let name = declaration.name.as_str();
        for page in MAINTENANCE_PAGES {
            if dir.join(page).is_file() {
                checks.push(Check::warn(
                    "leftovers",
                    dir.join(page).display().to_string(),
                    format!("{name} shows its maintenance page: its users cannot reach it"),
                    "if no install is running, delete the file (the agent also removes it at its next start)",
                ));
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut baks: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.to_ascii_lowercase().ends_with(".bak"))
                .collect();
            baks.sort();
            if !baks.is_empty() {
                checks.push(Check::warn(
                    "leftovers",
                    dir.display().to_string(),
                    format!(
                        "{name} holds {}: copies left by a manual update",
                        baks.join(", ")
                    ),
                    "check they are not needed, then delete them",
                ));
            }
        }
        if let Some(parent) = dir.parent()
            && let Ok(entries) = std::fs::read_dir(parent)
        {
            for entry in entries.filter_map(Result::ok) {
                let file = entry.file_name().to_string_lossy().into_owned();
                let aside = file == format!(".{name}.flotilla-previous")
                    || (file.starts_with(&format!(".{name}_"))
                        && file.ends_with(".flotilla-unsaved"));
                if aside {
                    checks.push(Check::warn(
                        "leftovers",
                        entry.path().display().to_string(),
                        format!("a version of {name} set aside by an install that did not finish"),
                        "the agent puts it back or backs it up at its next start or install; restart the agent",
                    ));
                }
            }
        }
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            "leftovers",
            root.display().to_string(),
            "no maintenance page, .bak file or folder set aside",
        ));
    }
    checks
}

/// Processes holding files in the module folders: an install waits for
/// them, then fails if they do not let go.
pub fn holders(settings: &Settings, only: &(dyn Fn(&str) -> bool + Sync)) -> Vec<Check> {
    let declarations = applications::load(&settings.layout.applications_config());
    let mut checks = Vec::new();
    for declaration in declarations
        .modules
        .iter()
        .filter(|d| only(d.name.as_str()))
    {
        let dir = declaration.install_dir(settings.layout.root());
        if !dir.is_dir() {
            continue;
        }
        let name = declaration.name.as_str();
        match platform::holders(&dir) {
            Ok(found) if found.is_empty() => {}
            Ok(found) => checks.push(
                Check::warn(
                    "holders",
                    dir.display().to_string(),
                    found.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                    format!(
                        "an install of {name} waits up to the lock budget for them to let go, then fails: stop them before the maintenance, or give the module a stopCommand/startCommand or appPool in applicationspath.config"
                    ),
                )
                .blocking(),
            ),
            Err(e) => checks.push(Check::warn(
                "holders",
                dir.display().to_string(),
                format!("cannot tell which processes hold files: {e}"),
                "run the doctor as the agent's account or an administrator",
            )),
        }
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            "holders",
            settings.layout.root().display().to_string(),
            "no process holds a file in the module folders",
        ));
    }
    checks
}

/// Free space for each pending package's install: the same rule as the
/// install's own (staging beside the module, two backup zips, the reserve).
pub async fn disk(
    settings: &Settings,
    trust: &PackageTrust,
    only: &(dyn Fn(&str) -> bool + Sync),
) -> Vec<Check> {
    let layout = settings.layout.clone();
    let scan_trust = trust.clone();
    let pending = tokio::task::spawn_blocking(move || inventory::pending(&layout, &scan_trust))
        .await
        .unwrap_or_default();
    let declarations = applications::load(&settings.layout.applications_config());
    let mut checks = Vec::new();
    for p in pending.iter().filter(|p| only(&p.module)) {
        let Some(declaration) = declarations
            .modules
            .iter()
            .find(|d| d.name.as_str() == p.module)
        else {
            continue;
        };
        let live = declaration.install_dir(settings.layout.root());
        // Opening hashes the package: off the runtime's threads.
        let (path, sha256) = (p.package.clone(), p.sha256.clone());
        let opened = tokio::task::spawn_blocking(move || {
            crate::install::package::Package::open(&path, &sha256).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let package = match opened {
            Ok(package) => package,
            Err(e) => {
                checks.push(
                    Check::fail(
                        "disk",
                        p.package.display().to_string(),
                        format!("the pending package of {} cannot be read: {e}", p.module),
                        "delete it: the agent downloads it again",
                    )
                    .blocking(),
                );
                continue;
            }
        };
        match crate::install::check_space(&package, &live, &settings.install).await {
            Ok(()) => checks.push(Check::ok(
                "disk",
                live.display().to_string(),
                format!("room to install {} {}", p.module, p.version),
            )),
            Err(e) => checks.push(
                Check::fail(
                    "disk",
                    live.display().to_string(),
                    e,
                    "free space on that volume (old backups, logs), or lower disk_reserve_mb",
                )
                .blocking(),
            ),
        }
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            "disk",
            settings.layout.packages_dir().display().to_string(),
            "no package pending",
        ));
    }
    checks
}

/// An install interrupted (power cut, kill) and not yet recovered.
pub fn journal(settings: &Settings) -> Vec<Check> {
    let dir = &settings.install.journal_dir;
    let waiting = journal::pending(dir);
    if waiting.is_empty() {
        return vec![Check::ok(
            "journal",
            dir.display().to_string(),
            "no interrupted install",
        )];
    }
    waiting
        .into_iter()
        .map(|path| {
            Check::fail(
                "journal",
                path.display().to_string(),
                "an install was interrupted and is not finished or rolled back yet",
                "restart the agent: it finishes or rolls back the install before anything else",
            )
            .blocking()
        })
        .collect()
}
