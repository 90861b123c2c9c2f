//! The maintenance page: `app_offline.htm` in a web module's folder takes it
//! out of service. Also the procedure's repair rule for a page left behind:
//! rename `app_offline.htm(l)` to `app_offline.bak` when there is no `.bak`,
//! otherwise delete it.

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local, Utc};

/// The page Flotilla puts up.
pub const PAGE: &str = "app_offline.htm";
/// The names a maintenance page may have.
pub const PAGES: [&str; 2] = ["app_offline.htm", "app_offline.html"];
/// Where the repair rule puts a leftover page.
pub const BAK: &str = "app_offline.bak";

/// The default page; `{{module}}`, `{{version}}` and `{{until}}` are filled in.
pub const DEFAULT_TEMPLATE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Maintenance</title>\
<style>body{font-family:system-ui,sans-serif;background:#f5f6f8;color:#1d2330;display:flex;min-height:90vh;align-items:center;justify-content:center}\
main{background:#fff;border-radius:10px;padding:2rem 3rem;box-shadow:0 1px 3px rgba(0,0,0,.1);text-align:center}</style></head>\
<body><main><h1>Back in a moment</h1><p>{{module}} is being updated to version {{version}}.</p><p>Expected back by {{until}}.</p></main></body></html>\n";

/// Renders the page from a template.
pub fn render(template: &str, module: &str, version: &str, until: DateTime<Utc>) -> String {
    let until = until.with_timezone(&Local).format("%H:%M:%S").to_string();
    template
        .replace("{{module}}", &escape(module))
        .replace("{{version}}", &escape(version))
        .replace("{{until}}", &until)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Puts the page up in `dir`.
pub fn put(dir: &Path, html: &str) -> io::Result<()> {
    let temporary = dir.join(".app_offline.htm.tmp");
    std::fs::write(&temporary, html)?;
    std::fs::rename(&temporary, dir.join(PAGE))
}

/// Takes Flotilla's page down; absent is fine.
pub fn remove(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(dir.join(PAGE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What the repair rule did to one leftover page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    RenamedToBak(PathBuf),
    Deleted(PathBuf),
}

impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Repair::RenamedToBak(page) => {
                write!(f, "renamed the leftover {} to {BAK}", page.display())
            }
            Repair::Deleted(page) => write!(
                f,
                "deleted the leftover {} ({BAK} already existed)",
                page.display()
            ),
        }
    }
}

/// Applies the procedure's rule to every leftover page in `dir`.
pub fn repair(dir: &Path) -> io::Result<Vec<Repair>> {
    let mut done = Vec::new();
    for name in PAGES {
        let page = dir.join(name);
        if !page.is_file() {
            continue;
        }
        let bak = dir.join(BAK);
        if bak.exists() {
            std::fs::remove_file(&page)?;
            done.push(Repair::Deleted(page));
        } else {
            std::fs::rename(&page, &bak)?;
            done.push(Repair::RenamedToBak(page));
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repair_rule() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("app_offline.htm"), "a").expect("write");
        let done = repair(dir.path()).expect("repair");
        assert!(matches!(done.as_slice(), [Repair::RenamedToBak(_)]));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(BAK)).expect("bak"),
            "a"
        );

        std::fs::write(dir.path().join("app_offline.html"), "b").expect("write");
        let done = repair(dir.path()).expect("repair");
        assert!(matches!(done.as_slice(), [Repair::Deleted(_)]));
        assert!(!dir.path().join("app_offline.html").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(BAK)).expect("bak"),
            "a",
            "the .bak is kept"
        );
    }

    #[test]
    fn renders_the_expected_end() {
        let page = render(
            "{{module}} {{version}} {{until}}",
            "ecommerce",
            "5.9.0",
            Utc::now(),
        );
        assert!(page.starts_with("ecommerce 5.9.0 "));
    }
}
