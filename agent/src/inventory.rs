//! What is installed on this server: every declared module with its version
//! and state, read from disk. A scan is cheap (one small XML file and one
//! small version file per module), so the agent simply rescans on a short
//! interval; that also survives a module folder being swapped by an install,
//! which a file-system watch on the old folder would not.

use std::collections::BTreeMap;
use std::path::Path;

use flotilla_proto::domain::{ModuleKind, ModuleName, ModuleReport, ModuleState, Problem, Version};

use crate::applications::{self, ModuleDeclaration};
use crate::config::DataLayout;
use crate::pending::{PackageTrust, Pending, best, packages_in};

/// The maintenance page files of a web module, as the procedure names them.
pub const MAINTENANCE_PAGES: [&str; 2] = ["app_offline.htm", "app_offline.html"];

/// The whole picture of the server at one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Sorted by module name.
    pub modules: Vec<ModuleReport>,
    pub problems: Vec<Problem>,
}

/// What changed between two inventories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InventoryChange {
    pub upserted: Vec<ModuleReport>,
    pub removed: Vec<ModuleName>,
    /// `Some` when the problem list changed: the new list.
    pub problems: Option<Vec<Problem>>,
}

impl InventoryChange {
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty() && self.problems.is_none()
    }
}

impl Inventory {
    /// What must be sent to bring a peer that knows `self` up to `newer`.
    pub fn change_to(&self, newer: &Inventory) -> InventoryChange {
        let old: BTreeMap<&ModuleName, &ModuleReport> =
            self.modules.iter().map(|m| (&m.name, m)).collect();
        let new: BTreeMap<&ModuleName, &ModuleReport> =
            newer.modules.iter().map(|m| (&m.name, m)).collect();
        InventoryChange {
            upserted: new
                .iter()
                .filter(|(name, module)| old.get(*name) != Some(*module))
                .map(|(_, module)| (*module).clone())
                .collect(),
            removed: old
                .keys()
                .filter(|name| !new.contains_key(*name))
                .map(|name| (*name).clone())
                .collect(),
            problems: (self.problems != newer.problems).then(|| newer.problems.clone()),
        }
    }

    pub fn module(&self, name: &str) -> Option<&ModuleReport> {
        self.modules.iter().find(|m| m.name.as_str() == name)
    }
}

/// The packages pending for this server's modules: per module, the
/// package [`best`] chooses.
pub fn pending(layout: &DataLayout, trust: &PackageTrust) -> Vec<Pending> {
    // What is on disk now, not the last scan: right after an install the
    // scan may still show the version that was briefly in place.
    let inventory = scan(layout, trust);
    let candidates = packages_in(&layout.packages_dir(), trust);
    let mut pending: Vec<Pending> = inventory
        .modules
        .iter()
        .filter_map(|module| {
            best(
                candidates
                    .iter()
                    .filter(|p| p.module == module.name.as_str()),
                module.installed_version.as_ref(),
                trust,
            )
            .cloned()
        })
        .collect();
    pending.sort_by(|a, b| a.module.cmp(&b.module));
    pending
}

/// Reads `applicationspath.config` and every module it declares, with the
/// package each would install (as `trust` chooses it).
/// Flotilla's own agent, a module of every server (`flotilla-agent`, of
/// kind agent): this build's version, where it runs from.
fn agent_module() -> Option<ModuleReport> {
    let exe = std::env::current_exe().ok()?;
    Some(ModuleReport {
        name: ModuleName::parse(flotilla_proto::domain::AGENT_MODULE).ok()?,
        kind: ModuleKind::Agent,
        install_path: exe.parent()?.display().to_string(),
        installed_version: Version::parse(crate::VERSION).ok(),
        state: ModuleState::Installed,
        detail: String::new(),
        pending_version: None,
        download: None,
    })
}

pub fn scan(layout: &DataLayout, trust: &PackageTrust) -> Inventory {
    let declarations = applications::load(&layout.applications_config());
    let mut modules: Vec<ModuleReport> = declarations
        .modules
        .iter()
        .map(|declaration| inspect(declaration, layout.root()))
        .collect();
    modules.extend(agent_module());
    modules.sort_by(|a, b| a.name.cmp(&b.name));
    let packages = packages_in(&layout.packages_dir(), trust);
    for module in &mut modules {
        module.pending_version = best(
            packages.iter().filter(|p| p.module == module.name.as_str()),
            module.installed_version.as_ref(),
            trust,
        )
        .map(|p| p.version.clone());
    }
    // Hooks are for the application's modules: the agent runs none.
    let names: Vec<&str> = modules
        .iter()
        .filter(|m| m.kind != ModuleKind::Agent)
        .map(|m| m.name.as_str())
        .collect();
    let mut problems = declarations.problems;
    problems.extend(crate::hook_names::problems(&layout.scripts_dir(), &names));
    Inventory { modules, problems }
}

/// The version in a module's folder now, read from its version file: an
/// install decides by it, never by the last scan's inventory, which lags
/// behind an install that just ended.
pub fn installed_version(declaration: &ModuleDeclaration, data_root: &Path) -> Option<Version> {
    inspect(declaration, data_root).installed_version
}

/// Looks at one module's folder.
fn inspect(declaration: &ModuleDeclaration, data_root: &Path) -> ModuleReport {
    let dir = declaration.install_dir(data_root);
    let mut report = ModuleReport {
        name: declaration.name.clone(),
        kind: declaration.kind,
        install_path: declaration.path.clone(),
        installed_version: None,
        state: ModuleState::Installed,
        detail: String::new(),
        pending_version: None,
        download: None,
    };
    if !dir.is_dir() {
        report.state = ModuleState::Missing;
        report.detail = format!("install folder {} does not exist", dir.display());
        return report;
    }
    let version_file = dir.join(&declaration.version_file);
    match std::fs::read_to_string(&version_file) {
        Ok(text) => match Version::parse(text.lines().next().unwrap_or_default()) {
            Ok(version) => report.installed_version = Some(version),
            Err(e) => {
                report.state = ModuleState::VersionUnknown;
                report.detail = format!("{}: {e}", version_file.display());
            }
        },
        Err(e) => {
            report.state = ModuleState::VersionUnknown;
            report.detail = format!("cannot read version file {}: {e}", version_file.display());
        }
    }
    if report.state == ModuleState::Installed
        && let Some(page) = MAINTENANCE_PAGES
            .iter()
            .find(|page| dir.join(page).exists())
    {
        report.state = ModuleState::Maintenance;
        report.detail = format!("{page} is in place: the module shows its maintenance page");
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn layout_with(modules: &[(&str, &str, Option<&str>)]) -> (tempfile::TempDir, DataLayout) {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = DataLayout::new(dir.path().to_path_buf());
        fs::create_dir_all(layout.applications_config().parent().expect("parent")).expect("mkdir");
        let mut xml = String::from("<applications>\n");
        for (name, kind, version) in modules {
            xml.push_str(&format!(
                "  <application name=\"{name}\" kind=\"{kind}\" path=\"modules/{name}\"/>\n"
            ));
            if let Some(version) = version {
                let folder = dir.path().join("modules").join(name);
                fs::create_dir_all(&folder).expect("mkdir");
                fs::write(folder.join("version.txt"), format!("{version}\n")).expect("write");
            }
        }
        xml.push_str("</applications>\n");
        fs::write(layout.applications_config(), xml).expect("write");
        (dir, layout)
    }

    #[test]
    fn reads_versions_and_states() {
        let (dir, layout) = layout_with(&[
            ("ecommerce", "web", Some("2.3.0")),
            ("database", "database", None),
            ("integration", "service", Some("not a version")),
        ]);
        fs::write(dir.path().join("modules/ecommerce/app_offline.htm"), "down").expect("write");
        let inventory = scan(&layout, &PackageTrust::default());
        let summary: Vec<String> = inventory
            .modules
            .iter()
            .map(|m| {
                format!(
                    "{} {} {}",
                    m.name,
                    m.installed_version
                        .as_ref()
                        .map(|v| v.to_string())
                        .unwrap_or("-".into()),
                    m.state.as_str()
                )
            })
            .collect();
        // The agent itself is a module of every server, at its version.
        assert_eq!(
            summary,
            [
                "database - missing".to_owned(),
                "ecommerce 2.3.0 maintenance".to_owned(),
                format!("flotilla-agent {} installed", crate::VERSION),
                "integration - version_unknown".to_owned(),
            ]
        );
        assert!(inventory.problems.is_empty());
    }

    #[test]
    fn changes_carry_only_what_changed() {
        let (dir, layout) = layout_with(&[
            ("ecommerce", "web", Some("2.3.0")),
            ("integration", "service", Some("1.0")),
        ]);
        let before = scan(&layout, &PackageTrust::default());
        assert!(before.change_to(&before).is_empty());
        fs::write(dir.path().join("modules/ecommerce/version.txt"), "2.4.0").expect("write");
        let after = scan(&layout, &PackageTrust::default());
        let change = before.change_to(&after);
        assert_eq!(change.upserted.len(), 1);
        assert_eq!(
            change.upserted[0]
                .installed_version
                .as_ref()
                .map(|v| v.to_string()),
            Some("2.4.0".into())
        );
        assert!(change.removed.is_empty() && change.problems.is_none());

        let emptied = Inventory::default();
        let change = after.change_to(&emptied);
        assert_eq!(change.removed.len(), 3, "the two declared and the agent");
    }
}
