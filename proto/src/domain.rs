//! The vocabulary both sides share: validated names, module kinds, versions.
//!
//! These are domain types, not wire types: they have validating `parse`
//! constructors, so a value that exists is valid, and they carry no serde
//! derives that would quietly make them a contract. `convert.rs` maps them to
//! and from the generated `prost` messages.

use std::cmp::Ordering;
use std::fmt;

/// Why a name, kind or version was refused. The message says what was wrong
/// and what is accepted, ready to show to an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl ParseError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

fn check_identifier(what: &str, value: &str, max: usize) -> Result<(), ParseError> {
    if value.is_empty() {
        return Err(ParseError::new(format!("{what} is empty")));
    }
    if value.len() > max {
        return Err(ParseError::new(format!(
            "{what} \"{value}\" is longer than {max} characters"
        )));
    }
    let first_ok = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !first_ok || !rest_ok {
        return Err(ParseError::new(format!(
            "{what} \"{value}\" may only hold letters, digits, '-', '_' and '.', starting with a letter or digit"
        )));
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal, dots: $dots:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `value`.
            pub fn parse(value: &str) -> Result<Self, ParseError> {
                check_identifier($what, value, $max)?;
                if !$dots && value.contains('.') {
                    return Err(ParseError::new(format!(
                        "{} \"{value}\" may not contain '.'", $what
                    )));
                }
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// A module's identifier as used in file names and configuration
    /// (`ecommerce`, `gestioncommerciale`, ...). No '.', so that hook file
    /// names like `PREINSTALL_ecommerce.ps1` stay unambiguous.
    ModuleName, "module name", 64, dots: false
);
identifier!(
    /// A server's stable identity in the fleet.
    ServerId, "server id", 128, dots: true
);
identifier!(
    /// A customer site: the servers that together host one installation.
    SiteName, "site name", 128, dots: true
);

/// What kind of thing a module is, which decides how it is taken out of
/// service during an install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModuleKind {
    /// A web application under IIS (or any server honouring `app_offline.htm`).
    Web,
    /// A service the operating system starts and stops.
    Service,
    /// The application's database.
    Database,
    /// Flotilla's own agent (the module `flotilla-agent`), which updates
    /// itself: never declared in `applicationspath.config`.
    Agent,
}

impl ModuleKind {
    /// The kinds `applicationspath.config` declares.
    pub const ALL: [ModuleKind; 3] = [ModuleKind::Web, ModuleKind::Service, ModuleKind::Database];

    /// Parses the kind as written in `applicationspath.config`
    /// (case-insensitive): the application's kinds only.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(value.trim()))
            .ok_or_else(|| {
                ParseError::new(format!(
                    "unknown module kind \"{value}\": expected one of web, service, database"
                ))
            })
    }

    /// Parses the kind of a package: the application's, or `agent`.
    pub fn parse_package(value: &str) -> Result<Self, ParseError> {
        match value.trim().eq_ignore_ascii_case("agent") {
            true => Ok(ModuleKind::Agent),
            false => Self::parse(value).map_err(|_| {
                ParseError::new(format!(
                    "unknown module kind \"{value}\": expected one of web, service, database, agent"
                ))
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ModuleKind::Web => "web",
            ModuleKind::Service => "service",
            ModuleKind::Database => "database",
            ModuleKind::Agent => "agent",
        }
    }
}

/// The module that is Flotilla's own agent.
pub const AGENT_MODULE: &str = "flotilla-agent";

/// The platform this program was built for, as agents' packages name it:
/// `linux-x86_64`, `windows-x86_64`.
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// The platform an agent's Hello names (`linux x86_64`), as agent packages
/// name it (`linux-x86_64`).
pub fn platform_of_os(os: &str) -> String {
    os.trim().replace(' ', "-")
}

impl fmt::Display for ModuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the agent found when it looked at a module on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModuleState {
    /// Installed, and its version was read.
    Installed,
    /// The install folder does not exist.
    Missing,
    /// The folder exists but its version could not be read.
    VersionUnknown,
    /// An `app_offline.htm` is in place: the module is in maintenance.
    Maintenance,
}

impl ModuleState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleState::Installed => "installed",
            ModuleState::Missing => "missing",
            ModuleState::VersionUnknown => "version_unknown",
            ModuleState::Maintenance => "maintenance",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            ModuleState::Installed,
            ModuleState::Missing,
            ModuleState::VersionUnknown,
            ModuleState::Maintenance,
        ]
        .into_iter()
        .find(|state| state.as_str() == value)
    }
}

/// A module version: one to four dot-separated numbers (`2.3.0`,
/// `2024.11.3.1`), optionally followed by `-` and a pre-release tag
/// (`2.3.0-rc.1`). Ordered numerically; missing components count as zero and a
/// pre-release sorts before its release.
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    numbers: [u64; 4],
    pre_release: Option<String>,
}

impl Version {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let text = value.trim();
        let invalid = |why: &str| {
            ParseError::new(format!(
                "version \"{text}\" is not valid ({why}): expected 1 to 4 numbers separated by dots, like 2.3.0, optionally followed by -tag"
            ))
        };
        if text.is_empty() {
            return Err(ParseError::new("version is empty"));
        }
        let (core, pre_release) = match text.split_once('-') {
            Some((core, tag)) => {
                if tag.is_empty()
                    || !tag
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                {
                    return Err(invalid("bad pre-release tag"));
                }
                (core, Some(tag.to_owned()))
            }
            None => (text, None),
        };
        let mut numbers = [0u64; 4];
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() > 4 {
            return Err(invalid("more than 4 numbers"));
        }
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            if part.is_empty() || !part.chars().all(|c| c.is_ascii_digit()) {
                return Err(invalid("not a number"));
            }
            *slot = part.parse().map_err(|_| invalid("number too large"))?;
        }
        Ok(Self {
            text: text.to_owned(),
            numbers,
            pre_release,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.numbers.cmp(&other.numbers).then_with(|| {
            match (&self.pre_release, &other.pre_release) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            }
        })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// One module as the agent found it on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleReport {
    pub name: ModuleName,
    pub kind: ModuleKind,
    /// The install folder, as written in `applicationspath.config`.
    pub install_path: String,
    /// `None` when the version could not be read; `detail` says why.
    pub installed_version: Option<Version>,
    pub state: ModuleState,
    /// Explanation of the state for an operator; empty when all is well.
    pub detail: String,
    /// A newer package waiting on the server, if any.
    pub pending_version: Option<Version>,
    /// A download under way or that did not succeed.
    pub download: Option<DownloadReport>,
}

/// Where a package download stands, for the people watching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadReport {
    /// `downloading`, `failed` (retried) or `refused` (failed its checks).
    pub state: String,
    pub version: String,
    /// Progress, or why it failed.
    pub detail: String,
}

/// Something an operator must fix on a server, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file concerned, when there is one.
    pub file: Option<String>,
    /// 1-based line in `file`, when known.
    pub line: Option<u32>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}, line {line}: {}", self.message),
            (Some(file), None) => write!(f, "{file}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        for ok in ["ecommerce", "gestioncommerciale", "phygital-api", "db_2"] {
            assert_eq!(
                ModuleName::parse(ok).map(|n| n.to_string()),
                Ok(ok.to_owned())
            );
        }
        for (bad, says) in [
            ("", "empty"),
            ("e.commerce", "may not contain '.'"),
            ("-x", "starting with a letter"),
            ("a b", "may only hold"),
            ("../x", "may only hold"),
        ] {
            let err = ModuleName::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn module_kinds() {
        assert_eq!(ModuleKind::parse("Web"), Ok(ModuleKind::Web));
        assert_eq!(ModuleKind::parse(" service "), Ok(ModuleKind::Service));
        assert_eq!(ModuleKind::parse("database"), Ok(ModuleKind::Database));
        let err = ModuleKind::parse("iis").expect_err("iis").to_string();
        assert_eq!(
            err,
            "unknown module kind \"iis\": expected one of web, service, database"
        );
    }

    #[test]
    fn versions_order_numerically() {
        let v = |s: &str| Version::parse(s).expect(s);
        assert!(v("2.10.0") > v("2.9.9"));
        assert!(v("2.3") == v("2.3.0"));
        assert!(v("2.3.0-rc.1") < v("2.3.0"));
        assert!(v("2024.11.3.1") > v("2024.11.3"));
        assert_eq!(v(" 1.2.3 ").to_string(), "1.2.3");
    }

    #[test]
    fn bad_versions_say_why() {
        for (bad, says) in [
            ("", "empty"),
            ("1.2.3.4.5", "more than 4"),
            ("1.x", "not a number"),
            ("1..2", "not a number"),
            ("1.2-", "pre-release"),
        ] {
            let err = Version::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
