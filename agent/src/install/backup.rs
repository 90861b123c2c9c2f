//! Backups of the version an install replaced: the folder set aside during
//! the install is compressed into `<module>_<version>_<timestamp>.zip` once
//! the module is back in service, so the maintenance window never waits for
//! compression. Deflate level 1 through zlib-rs: zip with deflate is what
//! Windows opens natively, and level 1 runs several times faster than the
//! default level for a modestly larger file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

/// Compresses `folder` into `zip_path` (written beside it, then renamed);
/// returns the bytes read. On failure nothing is left behind.
pub fn compress(folder: &Path, zip_path: &Path) -> io::Result<u64> {
    finish(None, folder, zip_path).map(|done| done.bytes)
}

/// A zip of a module's folder taken while it was still in service, with
/// each file's size and modification time then: [`finish`] makes the final
/// backup from it once the folder is set aside, compressing only what
/// changed in between, so that the backup exists at `POSTBACKUP` without
/// lengthening the downtime.
#[derive(Debug)]
pub struct Early {
    pub zip: PathBuf,
    files: HashMap<String, Stamp>,
}

/// A file's size and modification time.
type Stamp = (u64, Option<SystemTime>);

/// What [`finish`] did: entries copied as compressed from the early zip,
/// entries compressed now, bytes of the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub copied: usize,
    pub compressed: usize,
    pub bytes: u64,
}

/// One entry of a folder, as a zip names it (`bin/shop.dll`, `bin/`).
struct Entry {
    name: String,
    path: PathBuf,
    /// `None` for a folder.
    stamp: Option<Stamp>,
}

/// Every entry under `folder`, folders first in each folder, in name order.
fn entries(folder: &Path) -> io::Result<Vec<Entry>> {
    let mut found = Vec::new();
    let mut stack = vec![folder.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut children: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
        children.sort_by_key(|e| e.file_name());
        for child in children {
            let path = child.path();
            let relative = path
                .strip_prefix(folder)
                .map_err(io::Error::other)?
                .to_string_lossy()
                .replace('\\', "/");
            let file_type = child.file_type()?;
            if file_type.is_dir() {
                found.push(Entry {
                    name: format!("{relative}/"),
                    path: path.clone(),
                    stamp: None,
                });
                stack.push(path);
            } else if file_type.is_file() {
                let metadata = child.metadata()?;
                found.push(Entry {
                    name: relative,
                    path,
                    stamp: Some((metadata.len(), metadata.modified().ok())),
                });
            }
        }
    }
    Ok(found)
}

fn options() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(false)
}

/// Compresses `folder` into `early_zip` while it is live, noting each
/// file's size and modification time. A file that changes meanwhile is
/// compressed again by [`finish`].
pub fn compress_early(folder: &Path, early_zip: &Path) -> io::Result<Early> {
    let written = (|| {
        let mut zip =
            zip::ZipWriter::new(BufWriter::with_capacity(1 << 20, File::create(early_zip)?));
        let mut files = HashMap::new();
        for entry in entries(folder)? {
            match entry.stamp {
                None => zip
                    .add_directory(entry.name.as_str(), options())
                    .map_err(io::Error::other)?,
                Some(stamp) => {
                    zip.start_file(
                        entry.name.as_str(),
                        options().large_file(stamp.0 >= u64::from(u32::MAX)),
                    )
                    .map_err(io::Error::other)?;
                    io::copy(&mut File::open(&entry.path)?, &mut zip)?;
                    files.insert(entry.name, stamp);
                }
            }
        }
        zip.finish().map_err(io::Error::other)?.flush()?;
        Ok(files)
    })();
    match written {
        Ok(files) => Ok(Early {
            zip: early_zip.to_path_buf(),
            files,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(early_zip);
            Err(e)
        }
    }
}

/// Writes the backup `zip_path` of `folder` as it is now (beside it, then
/// renamed, then synced): each file unchanged since `early` is copied as it
/// was compressed, every other one compressed now; without `early`, all
/// are. On failure nothing is left behind.
pub fn finish(early: Option<&Early>, folder: &Path, zip_path: &Path) -> io::Result<Finished> {
    let temporary = zip_path.with_extension("zip.tmp");
    let written = (|| {
        let mut archive = match early {
            Some(early) => Some(
                zip::ZipArchive::new(BufReader::new(File::open(&early.zip)?))
                    .map_err(io::Error::other)?,
            ),
            None => None,
        };
        let mut zip =
            zip::ZipWriter::new(BufWriter::with_capacity(1 << 20, File::create(&temporary)?));
        let mut done = Finished {
            copied: 0,
            compressed: 0,
            bytes: 0,
        };
        for entry in entries(folder)? {
            let Some(stamp) = entry.stamp else {
                zip.add_directory(entry.name.as_str(), options())
                    .map_err(io::Error::other)?;
                continue;
            };
            done.bytes += stamp.0;
            let unchanged = early.is_some_and(|e| e.files.get(&entry.name) == Some(&stamp));
            if let (true, Some(archive)) = (unchanged, archive.as_mut()) {
                let compressed = archive
                    .by_name_raw(entry.name.as_bytes())
                    .map_err(io::Error::other)?;
                zip.raw_copy_file(compressed).map_err(io::Error::other)?;
                done.copied += 1;
            } else {
                zip.start_file(
                    entry.name.as_str(),
                    options().large_file(stamp.0 >= u64::from(u32::MAX)),
                )
                .map_err(io::Error::other)?;
                io::copy(&mut File::open(&entry.path)?, &mut zip)?;
                done.compressed += 1;
            }
        }
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
        Ok(done)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Where the early zip of the backup `zip_path` is written: beside it,
/// hidden (`.<name>.early`), so no listing of backups counts it.
pub fn early_path(zip_path: &Path) -> PathBuf {
    let name = zip_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    zip_path.with_file_name(format!(".{name}.early"))
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
    // Early zips an interrupted install left (no install of the module runs
    // while this does).
    let early_prefix = format!(".{module}_");
    for entry in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&early_prefix) && name.ends_with(".zip.early") {
            let _ = std::fs::remove_file(entry.path());
        }
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

/// When a backup was taken, from its name (`<module>_<version>_<time>.zip`,
/// the time in UTC with or without milliseconds).
pub fn taken_time(path: &Path) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::NaiveDateTime::parse_from_str(&taken_at(path), "%Y%m%dT%H%M%S%.fZ")
        .ok()
        .map(|t| t.and_utc())
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
    fn a_backups_time_is_read_from_its_name() {
        let at = |name: &str| taken_time(Path::new(name)).map(|t| t.to_rfc3339());
        assert_eq!(
            at("ecommerce_5.9.0_20261207T211503.123Z.zip").as_deref(),
            Some("2026-12-07T21:15:03.123+00:00")
        );
        assert_eq!(
            at("ecommerce_5.9.0_20261201T100000Z.zip").as_deref(),
            Some("2026-12-01T10:00:00+00:00")
        );
        assert_eq!(at("ecommerce_5.9.0_yesterday.zip"), None);
    }

    /// Every file of a zip with its content.
    fn unzipped(zip_path: &Path) -> Vec<(String, Vec<u8>)> {
        let mut archive = zip::ZipArchive::new(File::open(zip_path).expect("open")).expect("zip");
        let mut files = Vec::new();
        for i in 0..archive.len() {
            let mut file = archive.by_index(i).expect("entry");
            let mut content = Vec::new();
            io::Read::read_to_end(&mut file, &mut content).expect("read");
            files.push((file.name().expect("name").into_owned(), content));
        }
        files.sort();
        files
    }

    #[test]
    fn an_early_zip_is_brought_up_to_date_compressing_only_what_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("ecommerce");
        std::fs::create_dir_all(folder.join("bin")).expect("mkdir");
        for i in 0..20 {
            std::fs::write(
                folder.join("bin").join(format!("lib{i}.dll")),
                format!("library {i}"),
            )
            .expect("write");
        }
        std::fs::write(folder.join("web.config"), "<config a=\"1\"/>").expect("write");
        std::fs::write(folder.join("old.log"), "gone soon").expect("write");
        let early = compress_early(&folder, &dir.path().join(".early.zip")).expect("early");

        // While still in service: a file rewritten to the same size (only its
        // time tells), one added, one deleted.
        let config = File::options()
            .write(true)
            .open(folder.join("web.config"))
            .expect("open");
        io::Write::write_all(&mut &config, b"<config a=\"2\"/>").expect("write");
        config
            .set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .expect("mtime");
        std::fs::write(folder.join("new.txt"), "added").expect("write");
        std::fs::remove_file(folder.join("old.log")).expect("rm");

        let zip_path = dir.path().join("ecommerce_1.0.0_20261201T100000Z.zip");
        let done = finish(Some(&early), &folder, &zip_path).expect("finish");
        assert_eq!((done.copied, done.compressed), (20, 2));
        let fresh = dir.path().join("fresh.zip");
        compress(&folder, &fresh).expect("compress");
        assert_eq!(
            unzipped(&zip_path),
            unzipped(&fresh),
            "exactly the folder as it is now"
        );
        assert!(
            unzipped(&zip_path).contains(&("web.config".to_owned(), b"<config a=\"2\"/>".to_vec()))
        );
        assert!(
            !dir.path()
                .join("ecommerce_1.0.0_20261201T100000Z.zip.tmp")
                .exists()
        );
    }

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
