//! `<data>/bin/updates/status.xml`: what the agent last checked and which
//! versions it detected, where the procedure tells a support engineer to
//! look. Written atomically (temporary file, then rename) so a reader never
//! sees half a file.

use std::io;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, Event};

use crate::inventory::Inventory;

/// Renders the status document.
pub fn render(inventory: &Inventory, checked_at: DateTime<Utc>) -> io::Result<Vec<u8>> {
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
    writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)))?;
    let last_check = checked_at.to_rfc3339_opts(SecondsFormat::Secs, true);
    writer
        .create_element("status")
        .with_attribute(("lastCheck", last_check.as_str()))
        .with_attribute(("agentVersion", crate::VERSION))
        .write_inner_content(|writer| {
            for module in &inventory.modules {
                let version = module
                    .installed_version
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                // The newest version this server knows of: a pending package's, or the installed one.
                let latest = module
                    .pending_version
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| version.clone());
                writer
                    .create_element("module")
                    .with_attribute(("name", module.name.as_str()))
                    .with_attribute(("kind", module.kind.as_str()))
                    .with_attribute(("installedVersion", version.as_str()))
                    .with_attribute(("latestVersion", latest.as_str()))
                    .with_attribute(("state", module.state.as_str()))
                    .write_empty()?;
            }
            for problem in &inventory.problems {
                writer
                    .create_element("problem")
                    .with_attribute(("message", problem.to_string().as_str()))
                    .write_empty()?;
            }
            Ok(())
        })?;
    let mut bytes = writer.into_inner();
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes the status file next to where it belongs, then renames it in place.
pub fn write(path: &Path, inventory: &Inventory, checked_at: DateTime<Utc>) -> io::Result<()> {
    let bytes = render(inventory, checked_at)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("xml.tmp");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::domain::{ModuleKind, ModuleName, ModuleReport, ModuleState, Version};

    #[test]
    fn lists_each_module_with_its_version() {
        let inventory = Inventory {
            modules: vec![ModuleReport {
                name: ModuleName::parse("ecommerce").expect("name"),
                kind: ModuleKind::Web,
                install_path: "D:\\Sites\\ecommerce".into(),
                installed_version: Some(Version::parse("2.3.0").expect("version")),
                state: ModuleState::Installed,
                detail: String::new(),
                pending_version: Some(Version::parse("2.4.0").expect("version")),
                download: None,
            }],
            problems: Vec::new(),
        };
        let at = DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .expect("date")
            .to_utc();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bin/updates/status.xml");
        write(&path, &inventory, at).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains("<status lastCheck=\"2026-11-25T10:00:00Z\""),
            "{text}"
        );
        assert!(
            text.contains(
                r#"<module name="ecommerce" kind="web" installedVersion="2.3.0" latestVersion="2.4.0" state="installed"/>"#
            ),
            "{text}"
        );
        assert!(!dir.path().join("bin/updates/status.xml.tmp").exists());
    }
}
