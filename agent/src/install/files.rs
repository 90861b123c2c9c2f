//! What the engine does to files and folders: unpacking, space checks,
//! staging ahead of the downtime, carrying over what the procedure keeps
//! (`preserve`, `.bak`), restoring the old version, the backup zip, and the
//! health check after the swap.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::journal::Plan;
use super::package::Package;
use super::{InstallSettings, backup, maintenance};

pub(super) async fn unpack(
    package: &Package,
    staged: &Path,
    limits: super::package::Limits,
) -> Result<(u64, u64), String> {
    let package = package.clone();
    let staged = staged.to_path_buf();
    tokio::task::spawn_blocking(move || {
        // The file is checked again: it must still be what was verified.
        let now = super::package::sha256_file(&package.path)
            .map_err(|e| format!("{}: {e}", package.path.display()))?;
        if now != package.sha256 {
            return Err(format!(
                "{} changed after it was verified; refused",
                package.path.display()
            ));
        }
        package.unpack(&staged, limits).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Refuses an install that would fill a volume: the staging folder needs the
/// package's unpacked size beside the module, and the backup up to the old
/// version's size, each plus the configured reserve.
pub async fn check_space(
    package: &Package,
    live: &Path,
    settings: &InstallSettings,
) -> Result<(), String> {
    let (package, live, backup_dir, reserve) = (
        package.clone(),
        live.to_path_buf(),
        settings.backup_dir.clone(),
        settings.disk_reserve,
    );
    tokio::task::spawn_blocking(move || {
        let mb = |bytes: u64| bytes / 1_000_000;
        let staging = package.unpacked_size().map_err(|e| e.to_string())?;
        let parent = live.parent().unwrap_or(&live);
        let free = fs4::available_space(parent).map_err(|e| format!("cannot tell the free space of {}: {e}", parent.display()))?;
        if free < staging.saturating_add(reserve) {
            return Err(format!(
                "not enough space beside {}: {} MB free, the new version needs {} MB plus the {} MB reserve; nothing was changed",
                live.display(),
                mb(free),
                mb(staging),
                mb(reserve)
            ));
        }
        // The zip made while in service and the final one, each up to the
        // old version's size.
        let old = folder_size(&live).saturating_mul(2);
        // A backup folder not made yet will be on its nearest parent's volume.
        let volume = backup_dir
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(&backup_dir);
        let free = fs4::available_space(volume)
            .map_err(|e| format!("cannot tell the free space of {}: {e}", volume.display()))?;
        // On one volume, the new version and the backup need room together.
        let together = same_volume(parent, volume);
        let needed = if together { old.saturating_add(staging) } else { old };
        if together && free < needed.saturating_add(reserve) {
            return Err(format!(
                "not enough space on the volume of {} and {}: {} MB free, the new version and the backup's two zips take up to {} MB plus the {} MB reserve; nothing was changed",
                live.display(),
                backup_dir.display(),
                mb(free),
                mb(needed),
                mb(reserve)
            ));
        }
        if free < old.saturating_add(reserve) {
            return Err(format!(
                "not enough space for the backup in {}: {} MB free, its two zips take up to {} MB plus the {} MB reserve; nothing was changed",
                backup_dir.display(),
                mb(free),
                mb(old),
                mb(reserve)
            ));
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Whether two existing paths are on the same volume.
fn same_volume(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev(),
            _ => true,
        }
    }
    #[cfg(not(unix))]
    {
        // Windows: the same drive or share.
        a.components().next() == b.components().next()
    }
}

/// Renames `from` to `to`, trying again while the folder is held (Windows
/// refuses to rename a folder that is a process's working directory, is
/// open in Explorer or is being scanned, and a file held without
/// `FILE_SHARE_DELETE` inside it) until `budget` would be overshot. Calls
/// `waiting` once, with the first refusal, when it waits.
pub(super) async fn rename_held(
    from: &Path,
    to: &Path,
    budget: Duration,
    mut waiting: impl FnMut(&io::Error),
) -> io::Result<()> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut first = true;
    loop {
        match std::fs::rename(from, to) {
            Ok(()) => return Ok(()),
            Err(e) if is_held(&e) && started.elapsed() + delay <= budget => {
                if std::mem::take(&mut first) {
                    waiting(&e);
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a rename failed because something holds what it renames.
pub(super) fn is_held(e: &io::Error) -> bool {
    // ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION.
    cfg!(windows) && matches!(e.raw_os_error(), Some(5 | 32 | 33))
}

pub(super) fn folder_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => folder_size(&entry.path()),
            Ok(_) => entry.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// The file beside a staging folder that says which package it holds.
pub(super) fn staged_marker(staged: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sha256", staged.display()))
}

/// The staging folder for `module` `version`, beside the module's folder.
pub fn staging_folder(live: &Path, module: &str, version: &str) -> Option<PathBuf> {
    Some(
        live.parent()?
            .join(format!(".{module}.flotilla-staged-{version}")),
    )
}

/// Unpacks a verified package into its staging folder ahead of any install,
/// so that an install only has to swap. Nothing is touched when the folder
/// already holds this package.
pub fn pre_stage(
    package: &Package,
    live: &Path,
    limits: super::package::Limits,
) -> Result<PathBuf, String> {
    let manifest = &package.manifest;
    let staged = staging_folder(live, manifest.module.as_str(), manifest.version.as_str())
        .ok_or_else(|| format!("{} has no parent folder", live.display()))?;
    let marker = staged_marker(&staged);
    if staged.is_dir()
        && std::fs::read_to_string(&marker).is_ok_and(|sha| sha.trim() == package.sha256)
    {
        return Ok(staged);
    }
    if staged.exists() {
        std::fs::remove_dir_all(&staged).map_err(|e| format!("{}: {e}", staged.display()))?;
    }
    package.unpack(&staged, limits).map_err(|e| e.to_string())?;
    std::fs::write(&marker, &package.sha256).map_err(|e| format!("{}: {e}", marker.display()))?;
    Ok(staged)
}

/// Flushes a freshly unpacked tree once, rather than every file (Unix).
pub(super) async fn sync_tree(dir: &Path) {
    #[cfg(unix)]
    {
        let _ = tokio::process::Command::new("sync")
            .arg("-f")
            .arg(dir)
            .status()
            .await;
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Copies preserved paths (files or folders) from the old version into the new.
pub(super) fn carry_over(
    old: &Path,
    new: &Path,
    preserve: &[String],
    had_bak: bool,
) -> io::Result<()> {
    let mut paths: Vec<&str> = preserve.iter().map(String::as_str).collect();
    if had_bak {
        paths.push(maintenance::BAK);
    }
    for relative in paths {
        let from = old.join(relative);
        let to = new.join(relative);
        if from.is_dir() {
            copy_tree(&from, &to)?;
        } else if from.is_file() {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

pub(super) fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Whether `dir` holds nothing but a maintenance page: the shell an install
/// puts in place of a web module while its old version is set aside.
pub(super) fn is_shell(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        let names: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        !names.is_empty()
            && names
                .iter()
                .all(|n| maintenance::PAGES.iter().any(|p| n == *p) || n == ".app_offline.htm.tmp")
    })
}

/// Makes the live folder the old version again, whatever step was reached:
/// idempotent, so recovery can call it after a crash at any point.
pub(super) fn restore_old(plan: &Plan, web: bool, set_aside: bool) -> Result<(), String> {
    let err = |what: &str, e: io::Error| format!("{what}: {e}");
    if plan.aside.exists() {
        if plan.live.exists() {
            if plan.discard.exists() {
                std::fs::remove_dir_all(&plan.discard)
                    .map_err(|e| err(&format!("cannot remove {}", plan.discard.display()), e))?;
            }
            std::fs::rename(&plan.live, &plan.discard).map_err(|e| {
                err(
                    &format!("cannot move the new version out of {}", plan.live.display()),
                    e,
                )
            })?;
        }
        std::fs::rename(&plan.aside, &plan.live).map_err(|e| {
            err(
                &format!(
                    "cannot move the old version back from {}",
                    plan.aside.display()
                ),
                e,
            )
        })?;
    } else if set_aside {
        return Err(format!(
            "the old version set aside in {} is gone, so {} cannot be put back; restore a kept backup",
            plan.aside.display(),
            plan.live.display()
        ));
    } else if !plan.live.exists() {
        return Err(format!(
            "neither {} nor {} exists: restore the old version from a backup in its folder",
            plan.live.display(),
            plan.aside.display()
        ));
    }
    if web {
        maintenance::remove(&plan.live)
            .map_err(|e| err("cannot remove the maintenance page", e))?;
    }
    for leftover in [&plan.staged, &plan.discard] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover)
                .map_err(|e| err(&format!("cannot remove {}", leftover.display()), e))?;
        }
    }
    Ok(())
}

/// After the commit: the old version set aside goes when its backup zip was
/// written before `POSTBACKUP`, or becomes it now (or, when that cannot be
/// written, is kept beside the module, out of the next install's way); old
/// versions kept so by earlier installs are backed up, and the newest
/// backups are kept.
pub(super) async fn write_backup(plan: &Plan, settings: &InstallSettings) -> Backups {
    let (plan, dir, keep) = (
        plan.clone(),
        settings.backup_dir.clone(),
        settings.backups_to_keep,
    );
    tokio::task::spawn_blocking(move || {
        let mut done = Backups::default();
        let mut just_kept = None;
        // Written before POSTBACKUP, the zip counts among those kept.
        let mut prune = plan.backup_file.exists();
        if plan.aside.exists() && plan.backup_file.exists() {
            // Backed up before POSTBACKUP: the folder set aside goes.
            if let Err(e) = std::fs::remove_dir_all(&plan.aside) {
                done.problems.push(format!(
                    "{} is backed up in {} but could not be removed: {e}; delete it by hand",
                    plan.aside.display(),
                    plan.backup_file.display()
                ));
            }
        } else if plan.aside.exists() {
            match save(&plan.aside, &plan.backup_file) {
                Ok((written, left)) => {
                    done.written.push(written);
                    done.problems.extend(left);
                }
                Err(e) => {
                    let from = plan.from_version.as_deref().unwrap_or("(unknown version)");
                    let kept = backup::unsaved_folder(&plan.live, &plan.backup_file);
                    let place = match std::fs::rename(&plan.aside, &kept) {
                        Ok(()) => {
                            just_kept = Some(kept.clone());
                            format!(
                                "the old version is kept in {}, and the next install of {} backs it up",
                                kept.display(),
                                plan.module
                            )
                        }
                        Err(moved) => format!(
                            "the old version stays in {} (it could not be moved aside: {moved})",
                            plan.aside.display()
                        ),
                    };
                    done.problems.push(format!(
                        "no backup of {} {from} was written to {}: {e}; {place}",
                        plan.module,
                        plan.backup_file.display()
                    ));
                }
            }
        } else {
            done.problems.push(format!(
                "no backup was written: the old version is no longer in {}",
                plan.aside.display()
            ));
        }
        // Old versions earlier installs could not back up.
        for (folder, zip) in backup::unsaved(&plan.live, &plan.module, &dir) {
            if Some(&folder) == just_kept.as_ref() {
                continue;
            }
            match save(&folder, &zip) {
                Ok((written, left)) => {
                    done.written.push(written);
                    done.problems.extend(left);
                }
                Err(e) => done.problems.push(format!(
                    "the old version kept in {} still cannot be backed up: {e}",
                    folder.display()
                )),
            }
        }
        prune |= !done.written.is_empty();
        if prune && let Err(e) = backup::prune(&dir, &plan.module, keep.max(1)) {
            done.problems.push(format!(
                "old backups of {} in {} could not be pruned: {e}",
                plan.module,
                dir.display()
            ));
        }
        done
    })
    .await
    .unwrap_or_else(|e| Backups {
        written: Vec::new(),
        problems: vec![format!("the backup stopped: {e}")],
    })
}

/// What became of the old versions once an install was committed.
#[derive(Debug, Default)]
pub(super) struct Backups {
    pub written: Vec<Written>,
    /// What could not be done, for a person: each says where the old
    /// version is.
    pub problems: Vec<String>,
}

/// A backup zip written: where, the bytes read, how long it took.
#[derive(Debug)]
pub(super) struct Written {
    pub zip: PathBuf,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Compresses `folder` into `zip`, then removes it; says so when it
/// cannot be removed.
fn save(folder: &Path, zip: &Path) -> Result<(Written, Option<String>), String> {
    let started = Instant::now();
    let bytes = backup::compress(folder, zip).map_err(|e| e.to_string())?;
    let written = Written {
        zip: zip.to_path_buf(),
        bytes,
        elapsed: started.elapsed(),
    };
    let left = std::fs::remove_dir_all(folder).err().map(|e| {
        format!(
            "{} is backed up in {} but could not be removed: {e}; delete it by hand",
            folder.display(),
            zip.display()
        )
    });
    Ok((written, left))
}

pub(super) async fn health_check(url: &str, timeout: Duration) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < timeout {
        match client.get(url).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => last = format!("answered {}", response.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!(
        "health check {url} failed for {} s: {last}",
        timeout.as_secs()
    ))
}

#[cfg(all(test, windows))]
mod windows_tests {
    use std::os::windows::fs::OpenOptionsExt;

    use super::*;

    /// What a process whose working directory is `dir` holds: the folder,
    /// open without `FILE_SHARE_DELETE`.
    fn hold_folder(dir: &Path) -> std::fs::File {
        const FILE_SHARE_READ_WRITE: u32 = 0x1 | 0x2;
        const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
        std::fs::OpenOptions::new()
            .read(true)
            .share_mode(FILE_SHARE_READ_WRITE)
            .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
            .open(dir)
            .expect("open the folder")
    }

    #[tokio::test]
    async fn a_held_folder_is_renamed_once_it_is_let_go_within_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("ecommerce");
        std::fs::create_dir_all(live.join("bin")).expect("mkdir");
        // (Real Windows refuses too when a folder inside is held; Wine
        // refuses only for the folder itself.)
        let held = hold_folder(&live);
        let refused = std::fs::rename(&live, dir.path().join("probe"));
        assert!(
            refused.as_ref().is_err_and(is_held),
            "a held folder cannot be renamed: {refused:?}"
        );
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let mut waited = Vec::new();
        let aside = dir.path().join(".ecommerce.flotilla-previous");
        rename_held(&live, &aside, Duration::from_secs(10), |e| {
            waited.push(e.to_string())
        })
        .await
        .expect("renamed once let go");
        letting_go.join().expect("join");
        assert_eq!(waited.len(), 1, "{waited:?}");
        assert!(aside.join("bin").is_dir() && !live.exists());
    }

    #[tokio::test]
    async fn a_folder_held_past_the_budget_is_not_renamed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("ecommerce");
        std::fs::create_dir_all(&live).expect("mkdir");
        let _held = hold_folder(&live);
        let aside = dir.path().join(".ecommerce.flotilla-previous");
        let error = rename_held(&live, &aside, Duration::from_millis(400), |_| {})
            .await
            .expect_err("still held");
        assert!(is_held(&error), "{error}");
        assert!(live.is_dir() && !aside.exists());
    }
}
