//! Backups of the version an install replaced: the folder set aside during
//! the install is compressed into `<module>_<version>_<timestamp>.zip` once
//! the module is back in service, so the maintenance window never waits for
//! compression. Deflate level 1 through zlib-rs: zip with deflate is what
//! Windows opens natively, and level 1 runs several times faster than the
//! default level for a modestly larger file.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

/// Compresses `folder` into `zip_path` (written beside it, then renamed);
/// returns the bytes read.
/// On failure nothing is left behind: the partial zip is removed.
pub fn compress(folder: &Path, zip_path: &Path) -> io::Result<u64> {
    let temporary = zip_path.with_extension("zip.tmp");
    let written = write_zip(folder, &temporary, zip_path);
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn write_zip(folder: &Path, temporary: &Path, zip_path: &Path) -> io::Result<u64> {
    let file = File::create(temporary)?;
    let mut zip = zip::ZipWriter::new(BufWriter::with_capacity(1 << 20, file));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(false);
    let total = flotilla_proto::package::build::add_tree(&mut zip, folder, "", options)?;
    let mut writer = zip.finish().map_err(io::Error::other)?;
    writer.flush()?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    std::fs::rename(temporary, zip_path)?;
    if let Some(dir) = zip_path.parent() {
        super::journal::sync_dir(dir);
    }
    Ok(total)
}

/// Keeps the newest `keep` backups of `module` in `dir`; returns the removed.
pub fn prune(dir: &Path, module: &str, keep: usize) -> io::Result<Vec<PathBuf>> {
    let prefix = format!("{module}_");
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".zip"))
        })
        .collect();
    backups.sort_by_key(|p| taken_at(p));
    let excess = backups.len().saturating_sub(keep);
    let removed: Vec<PathBuf> = backups.into_iter().take(excess).collect();
    for path in &removed {
        std::fs::remove_file(path)?;
    }
    Ok(removed)
}

/// The backups of `module` in `dir`, newest first.
pub fn list(dir: &Path, module: &str) -> Vec<PathBuf> {
    let prefix = format!("{module}_");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut backups: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".zip"))
        })
        .collect();
    backups.sort_by_key(|p| std::cmp::Reverse(taken_at(p)));
    backups
}

/// The sortable UTC time at the end of a backup's name
/// (`<module>_<version>_<time>.zip`).
fn taken_at(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.rsplit_once('_'))
        .map(|(_, time)| time.to_owned())
        .unwrap_or_default()
}

/// Where the old version goes when its backup cannot be written: beside the
/// module (a rename, same volume), named for the zip it should have become
/// (`.<module>_<version>_<time>.flotilla-unsaved`), so that a later install
/// backs it up under that name.
pub fn unsaved_folder(live: &Path, zip_path: &Path) -> PathBuf {
    let stem = zip_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    live.with_file_name(format!(".{stem}{UNSAVED}"))
}

const UNSAVED: &str = ".flotilla-unsaved";

/// The old versions of `module` kept beside `live` because their backup
/// could not be written, each with the zip it should become in `dir`.
pub fn unsaved(live: &Path, module: &str, dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let prefix = format!(".{module}_");
    let Some(Ok(entries)) = live.parent().map(std::fs::read_dir) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_owned();
            let stem = name.strip_prefix('.')?.strip_suffix(UNSAVED)?;
            (name.starts_with(&prefix) && entry.path().is_dir())
                .then(|| (entry.path(), dir.join(format!("{stem}.zip"))))
        })
        .collect();
    found.sort();
    found
}

/// Checks that a backup can be written to `dir` before anything is touched.
pub fn check_writable(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(".flotilla-write-probe");
    std::fs::write(&probe, b"probe")?;
    std::fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zip_that_cannot_be_written_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("ecommerce");
        std::fs::create_dir_all(&folder).expect("mkdir");
        std::fs::write(folder.join("index.html"), "v1").expect("write");
        // The zip's name is taken by a folder: the final rename fails.
        let zip_path = dir
            .path()
            .join("backups")
            .join("ecommerce_1.0.0_20261201T100000Z.zip");
        std::fs::create_dir_all(zip_path.join("in-the-way")).expect("mkdir");
        assert!(compress(&folder, &zip_path).is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            ["ecommerce_1.0.0_20261201T100000Z.zip"],
            "no .zip.tmp left"
        );
    }

    /// The case found on Windows: a file of the old version is held open
    /// without sharing (an antivirus, a process that did not let go).
    #[cfg(windows)]
    #[test]
    fn a_file_held_without_sharing_fails_the_zip_and_leaves_nothing_behind() {
        use std::os::windows::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("ecommerce");
        std::fs::create_dir_all(&folder).expect("mkdir");
        std::fs::write(folder.join("shop.dll"), "v1").expect("write");
        let _held = std::fs::OpenOptions::new()
            .read(true)
            .share_mode(0)
            .open(folder.join("shop.dll"))
            .expect("open without sharing");
        let backups = dir.path().join("backups");
        std::fs::create_dir_all(&backups).expect("mkdir");
        let error = compress(
            &folder,
            &backups.join("ecommerce_1.0.0_20261201T100000Z.zip"),
        )
        .expect_err("a sharing violation");
        assert_eq!(error.raw_os_error(), Some(32), "{error}");
        assert_eq!(
            std::fs::read_dir(&backups).expect("read").count(),
            0,
            "no .zip.tmp left"
        );
    }

    #[test]
    fn unsaved_old_versions_are_found_with_the_zip_they_become() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("sites").join("ecommerce");
        std::fs::create_dir_all(&live).expect("mkdir");
        let backups = dir.path().join("backups");
        let zip = backups.join("ecommerce_1.0.0_20261201T100000.000Z.zip");
        let kept = unsaved_folder(&live, &zip);
        assert_eq!(
            kept.file_name().expect("name"),
            ".ecommerce_1.0.0_20261201T100000.000Z.flotilla-unsaved"
        );
        std::fs::create_dir_all(&kept).expect("mkdir");
        std::fs::create_dir_all(live.with_file_name(".ecommerce.flotilla-previous"))
            .expect("mkdir");
        std::fs::create_dir_all(
            live.with_file_name(".phygitalapi_2.0.0_20261201T100000.000Z.flotilla-unsaved"),
        )
        .expect("mkdir");
        assert_eq!(unsaved(&live, "ecommerce", &backups), [(kept, zip)]);
    }

    #[test]
    fn newest_first_by_time_not_by_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "ecommerce_2.0.0_20261101T100000Z.zip",
            "ecommerce_1.0.0_20261102T100000Z.zip",
            "ecommerce_10.0.0_20261001T100000Z.zip",
            "phygitalapi_1.0.0_20261201T100000Z.zip",
        ] {
            std::fs::write(dir.path().join(name), "zip").expect("write");
        }
        let names = |paths: Vec<PathBuf>| -> Vec<String> {
            paths
                .iter()
                .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            names(list(dir.path(), "ecommerce")),
            [
                "ecommerce_1.0.0_20261102T100000Z.zip",
                "ecommerce_2.0.0_20261101T100000Z.zip",
                "ecommerce_10.0.0_20261001T100000Z.zip"
            ]
        );
        let removed = prune(dir.path(), "ecommerce", 2).expect("prune");
        assert_eq!(names(removed), ["ecommerce_10.0.0_20261001T100000Z.zip"]);
    }
}
