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
pub fn compress(folder: &Path, zip_path: &Path) -> io::Result<u64> {
    let temporary = zip_path.with_extension("zip.tmp");
    let file = File::create(&temporary)?;
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
    std::fs::rename(&temporary, zip_path)?;
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
