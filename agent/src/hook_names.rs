//! Hook scripts whose names the agent will never run: the procedure's
//! `<PHASE>_<module>` (or `-`) names a phase and a module of this server,
//! and a script that names neither is silently skipped at install time.
//! Each becomes a [`Problem`] with a suggestion, reported with the
//! inventory, so that it shows on the dashboard as soon as the agent scans.

use std::path::Path;

use flotilla_proto::domain::Problem;

use crate::install::hooks::Phase;

/// The extensions of scripts a hook may be (any platform).
const SCRIPT_EXTENSIONS: [&str; 4] = ["ps1", "sh", "cmd", "bat"];

/// The problems of the scripts folder `scripts` for a server hosting
/// `modules`.
pub fn problems(scripts: &Path, modules: &[&str]) -> Vec<Problem> {
    let Ok(entries) = std::fs::read_dir(scripts) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let message = misnamed(&name, modules)?;
            Some(Problem {
                file: Some(scripts.join(&name).display().to_string()),
                line: None,
                message,
            })
        })
        .collect()
}

/// Why the hook named `file` will never run, with what it may have meant;
/// `None` when it will (or it is not a script).
pub fn misnamed(file: &str, modules: &[&str]) -> Option<String> {
    let (stem, extension) = file.rsplit_once('.')?;
    if !SCRIPT_EXTENSIONS
        .iter()
        .any(|e| e.eq_ignore_ascii_case(extension))
    {
        return None;
    }
    let never = format!("hook {file} is never run");
    let Some(split) = stem.find(['_', '-']) else {
        return Some(format!(
            "{never}: its name must be <PHASE>_<module> (or <PHASE>-<module>), e.g. PREINSTALL_{}.{extension}",
            modules.first().copied().unwrap_or("ecommerce")
        ));
    };
    let (phase, module) = (&stem[..split], &stem[split + 1..]);
    let phases: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
    if !phases.iter().any(|p| p.eq_ignore_ascii_case(phase)) {
        return Some(format!(
            "{never}: \"{phase}\" is not a phase{} (phases: {})",
            did_you_mean(phase, &phases),
            phases.join(", ")
        ));
    }
    if !modules.iter().any(|m| m.eq_ignore_ascii_case(module)) {
        return Some(format!(
            "{never}: no module \"{module}\" on this server{} (modules: {})",
            did_you_mean(module, modules),
            if modules.is_empty() {
                "none declared".to_owned()
            } else {
                modules.join(", ")
            }
        ));
    }
    None
}

/// "; did you mean X?" for the candidate nearest to `word`, if one is near
/// enough: a prefix either way, or a few letters apart.
fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| {
            let lower = c.to_ascii_lowercase();
            let distance = if lower.starts_with(&word) || word.starts_with(&lower) {
                0
            } else {
                strsim::damerau_levenshtein(&word, &lower)
            };
            (distance, *c)
        })
        .filter(|(distance, _)| *distance <= 2.max(word.len() / 3))
        .min()
        .map(|(_, c)| format!("; did you mean \"{c}\"?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const MODULES: [&str; 3] = ["ecommerce", "phygitalapi", "database"];

    #[test]
    fn a_hook_naming_no_module_or_no_phase_is_named_with_a_suggestion() {
        assert_eq!(
            misnamed("POSTINSTALL-phygital.ps1", &MODULES).as_deref(),
            Some(
                "hook POSTINSTALL-phygital.ps1 is never run: no module \"phygital\" on this server; did you mean \"phygitalapi\"? (modules: ecommerce, phygitalapi, database)"
            )
        );
        assert_eq!(
            misnamed("PREINSTAL_ecommerce.sh", &MODULES).as_deref(),
            Some(
                "hook PREINSTAL_ecommerce.sh is never run: \"PREINSTAL\" is not a phase; did you mean \"PREINSTALL\"? (phases: STARTUPDATE, PREBACKUP, POSTBACKUP, PREINSTALL, POSTINSTALL, ENDUPDATE)"
            )
        );
        assert_eq!(
            misnamed("POSTINSTALL_ecomerce.cmd", &MODULES).as_deref(),
            Some(
                "hook POSTINSTALL_ecomerce.cmd is never run: no module \"ecomerce\" on this server; did you mean \"ecommerce\"? (modules: ecommerce, phygitalapi, database)"
            )
        );
        assert!(
            misnamed("cleanup.ps1", &MODULES)
                .unwrap()
                .contains("its name must be <PHASE>_<module>")
        );
        // Far from anything: no guess.
        assert_eq!(
            misnamed("PREINSTALL_billing.sh", &MODULES).as_deref(),
            Some(
                "hook PREINSTALL_billing.sh is never run: no module \"billing\" on this server (modules: ecommerce, phygitalapi, database)"
            )
        );
    }

    #[test]
    fn well_named_hooks_and_other_files_are_fine() {
        for fine in [
            "PREINSTALL_ecommerce.ps1",
            "postinstall-PhygitalApi.sh",
            "ENDUPDATE_database.bat",
            "README.txt",
            "notes",
        ] {
            assert_eq!(misnamed(fine, &MODULES), None, "{fine}");
        }
    }

    #[test]
    fn the_scripts_folder_is_read_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "PREINSTALL_ecommerce.sh",
            "POSTINSTALL-phygital.ps1",
            "ZZ.sh",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let found: Vec<String> = problems(dir.path(), &MODULES)
            .into_iter()
            .map(|p| p.file.unwrap())
            .collect();
        assert_eq!(
            found,
            [
                dir.path()
                    .join("POSTINSTALL-phygital.ps1")
                    .display()
                    .to_string(),
                dir.path().join("ZZ.sh").display().to_string(),
            ]
        );
    }
}
