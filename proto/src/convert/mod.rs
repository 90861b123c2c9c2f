//! Conversions between the shared domain types and the generated wire
//! messages. The only place that knows both: the inventory here, commands,
//! offers and install reports in [`link`], database answers in
//! [`database`], doctors' reports in [`doctor`].

#[cfg(feature = "database")]
mod database;
mod doctor;
mod link;

use crate::domain::{
    DownloadReport, ModuleKind, ModuleName, ModuleReport, ModuleState, ParseError, Problem, Version,
};
use crate::v1;

impl From<ModuleKind> for v1::ModuleKind {
    fn from(kind: ModuleKind) -> Self {
        match kind {
            ModuleKind::Web => v1::ModuleKind::Web,
            ModuleKind::Service => v1::ModuleKind::Service,
            ModuleKind::Database => v1::ModuleKind::Database,
            ModuleKind::Agent => v1::ModuleKind::Agent,
        }
    }
}

impl From<ModuleState> for v1::ModuleState {
    fn from(state: ModuleState) -> Self {
        match state {
            ModuleState::Installed => v1::ModuleState::Installed,
            ModuleState::Missing => v1::ModuleState::Missing,
            ModuleState::VersionUnknown => v1::ModuleState::VersionUnknown,
            ModuleState::Maintenance => v1::ModuleState::Maintenance,
        }
    }
}

impl From<&ModuleReport> for v1::Module {
    fn from(module: &ModuleReport) -> Self {
        v1::Module {
            name: module.name.to_string(),
            kind: v1::ModuleKind::from(module.kind).into(),
            install_path: module.install_path.clone(),
            installed_version: module
                .installed_version
                .as_ref()
                .map(Version::to_string)
                .unwrap_or_default(),
            state: v1::ModuleState::from(module.state).into(),
            detail: module.detail.clone(),
            pending_version: module
                .pending_version
                .as_ref()
                .map(Version::to_string)
                .unwrap_or_default(),
            download_state: module
                .download
                .as_ref()
                .map(|d| d.state.clone())
                .unwrap_or_default(),
            download_version: module
                .download
                .as_ref()
                .map(|d| d.version.clone())
                .unwrap_or_default(),
            download_detail: module
                .download
                .as_ref()
                .map(|d| d.detail.clone())
                .unwrap_or_default(),
        }
    }
}

impl TryFrom<v1::Module> for ModuleReport {
    type Error = ParseError;

    /// Validates a module received from an agent.
    fn try_from(module: v1::Module) -> Result<Self, ParseError> {
        let name = ModuleName::parse(&module.name)?;
        let in_module = |e: ParseError| ParseError::new(format!("module {name}: {e}"));
        let kind = match v1::ModuleKind::try_from(module.kind) {
            Ok(v1::ModuleKind::Web) => ModuleKind::Web,
            Ok(v1::ModuleKind::Service) => ModuleKind::Service,
            Ok(v1::ModuleKind::Database) => ModuleKind::Database,
            Ok(v1::ModuleKind::Agent) => ModuleKind::Agent,
            _ => {
                return Err(in_module(ParseError::new(format!(
                    "unknown module kind {}",
                    module.kind
                ))));
            }
        };
        let state = match v1::ModuleState::try_from(module.state) {
            Ok(v1::ModuleState::Installed) => ModuleState::Installed,
            Ok(v1::ModuleState::Missing) => ModuleState::Missing,
            Ok(v1::ModuleState::VersionUnknown) => ModuleState::VersionUnknown,
            Ok(v1::ModuleState::Maintenance) => ModuleState::Maintenance,
            _ => {
                return Err(in_module(ParseError::new(format!(
                    "unknown module state {}",
                    module.state
                ))));
            }
        };
        let installed_version = if module.installed_version.is_empty() {
            None
        } else {
            Some(Version::parse(&module.installed_version).map_err(in_module)?)
        };
        let pending_version = if module.pending_version.is_empty() {
            None
        } else {
            Some(Version::parse(&module.pending_version).map_err(in_module)?)
        };
        Ok(ModuleReport {
            name,
            kind,
            install_path: module.install_path,
            installed_version,
            state,
            detail: module.detail,
            pending_version,
            download: (!module.download_state.is_empty()).then_some(DownloadReport {
                state: module.download_state,
                version: module.download_version,
                detail: module.download_detail,
            }),
        })
    }
}

impl From<&Problem> for v1::Problem {
    fn from(problem: &Problem) -> Self {
        v1::Problem {
            file: problem.file.clone().unwrap_or_default(),
            line: problem.line.unwrap_or(0),
            message: problem.message.clone(),
        }
    }
}

impl From<v1::Problem> for Problem {
    fn from(problem: v1::Problem) -> Self {
        Problem {
            file: Some(problem.file).filter(|f| !f.is_empty()),
            line: Some(problem.line).filter(|l| *l > 0),
            message: problem.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_survives_the_round_trip() {
        let report = ModuleReport {
            name: ModuleName::parse("ecommerce").expect("name"),
            kind: ModuleKind::Web,
            install_path: "D:\\Sites\\ecommerce".into(),
            installed_version: Some(Version::parse("2.3.0").expect("version")),
            state: ModuleState::Installed,
            detail: String::new(),
            pending_version: Some(Version::parse("2.4.0").expect("version")),
            download: None,
        };
        let back = ModuleReport::try_from(v1::Module::from(&report)).expect("valid");
        assert_eq!(back, report);
    }

    #[test]
    fn a_bad_module_from_the_wire_is_named() {
        let wire = v1::Module {
            name: "ecommerce".into(),
            kind: v1::ModuleKind::Web.into(),
            installed_version: "two".into(),
            state: v1::ModuleState::Installed.into(),
            ..Default::default()
        };
        let err = ModuleReport::try_from(wire)
            .expect_err("bad version")
            .to_string();
        assert!(
            err.starts_with("module ecommerce: version \"two\""),
            "{err}"
        );
    }
}
