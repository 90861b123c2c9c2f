//! The plan of a rollout, before anything starts: which sites, in which
//! waves, which servers and modules go from which version to which, in which
//! order and window, and the expected downtime per site. Pure: computed from
//! the fleet as stored, the release, the schedules and past installs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use flotilla_proto::domain::{AGENT_MODULE, Version, platform_of_os};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::strategy::{Calendar, Invalid, Strategy};
use crate::db::{
    Estimate, ReleaseRecord, RolloutRecord, RolloutRows, RolloutSiteRecord, RolloutStepRecord,
    ServerRecord,
};
use crate::states::{RolloutState, SiteState, StepState};

/// Which sites a rollout brings the release to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// These sites. With neither this nor `site_pattern`: every site that
    /// hosts a module of the release.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Or the sites whose name matches, `*` standing for any characters
    /// (`acme-*`).
    pub site_pattern: Option<String>,
}

/// How long installs of each module took, from the controller's history.
#[derive(Debug, Clone, Default)]
pub struct Estimates {
    by_module: HashMap<String, (Duration, Duration)>,
    default_install: Duration,
}

impl Estimates {
    /// Medians of the past successful installs; `default_install` for a
    /// module never installed (its downtime then assumed as long).
    pub fn new(history: &[Estimate], default_install: Duration) -> Estimates {
        let mut samples: HashMap<&str, (Vec<i64>, Vec<i64>)> = HashMap::new();
        for e in history {
            let entry = samples.entry(&e.module).or_default();
            entry.0.push(e.duration_ms.max(0));
            entry.1.push(e.downtime_ms.max(0));
        }
        let median = |v: &mut Vec<i64>| {
            v.sort_unstable();
            Duration::milliseconds(v[v.len() / 2])
        };
        Estimates {
            by_module: samples
                .into_iter()
                .map(|(m, (mut d, mut o))| (m.to_owned(), (median(&mut d), median(&mut o))))
                .collect(),
            default_install,
        }
    }

    /// How long an install of `module` takes.
    pub fn install(&self, module: &str) -> Duration {
        self.by_module
            .get(module)
            .map_or(self.default_install, |e| e.0)
    }

    /// How long `module` is out of service during its install.
    pub fn downtime(&self, module: &str) -> Duration {
        self.by_module
            .get(module)
            .map_or(self.default_install, |e| e.1)
    }

    /// A site's whole update: the layers one after the other, the modules of
    /// a layer side by side. Returns (duration, downtime).
    pub fn site<'a>(&self, layers: impl IntoIterator<Item = &'a [String]>) -> (Duration, Duration) {
        layers
            .into_iter()
            .fold((Duration::zero(), Duration::zero()), |(d, o), layer| {
                let longest = |f: &dyn Fn(&str) -> Duration| {
                    layer.iter().map(|m| f(m)).max().unwrap_or_default()
                };
                (
                    d + longest(&|m| self.install(m)),
                    o + longest(&|m| self.downtime(m)),
                )
            })
    }
}

/// The whole plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Plan {
    pub release: String,
    /// Site names per wave, in order.
    pub waves: Vec<Vec<String>>,
    pub sites: Vec<SitePlan>,
    /// Things an operator should know before starting (offline servers, ...).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SitePlan {
    pub site: String,
    /// 1 for the first wave.
    pub wave: u32,
    pub time_zone: String,
    /// The modules in the order they go, those of a layer side by side.
    pub layers: Vec<Vec<String>>,
    pub steps: Vec<StepPlan>,
    /// The whole update, estimated from past installs (seconds).
    pub estimated_seconds: i64,
    /// How long users are without the application, estimated (ms).
    pub expected_downtime_ms: i64,
    /// The earliest slot it fits in (for later waves, after the earlier
    /// waves' estimated time); `null` when no window in the next eight days
    /// is long enough.
    pub planned_start: Option<DateTime<Utc>>,
    pub planned_end: Option<DateTime<Utc>>,
    /// `planned_start` in the site's time zone.
    pub planned_start_local: Option<String>,
    /// A dry run's preflight: what each server with something to install
    /// answers now to the checks that would make an install fail.
    pub preflight: Vec<PreflightAnswer>,
}

/// A server's answer to a preflight, in a plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PreflightAnswer {
    pub server: String,
    /// "check subject: finding (fix: …)" of each FAIL that would block.
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepPlan {
    pub server: String,
    pub module: String,
    /// 0 first.
    pub layer: u32,
    pub from_version: Option<String>,
    pub to_version: String,
    /// `install`, or `skip` when the server already has this version or a newer one.
    pub action: String,
}

impl Plan {
    /// A new rollout's rows for this plan: running, its sites waiting for
    /// their wave, its steps pending (or skipped when already installed).
    pub fn rows(&self, strategy: String, actor: &str, now: DateTime<Utc>) -> RolloutRows {
        let sites = self
            .sites
            .iter()
            .map(|s| RolloutSiteRecord {
                rollout_id: 0,
                site: s.site.clone(),
                wave: i64::from(s.wave),
                state: SiteState::Waiting,
                message: None,
                planned_start: None,
                planned_end: None,
                notice_sent_at: None,
                notice_result: None,
                started_at: None,
                finished_at: None,
                preflight: None,
                preflight_at: None,
                preflight_override_by: None,
            })
            .collect();
        let steps = self
            .sites
            .iter()
            .flat_map(|s| s.steps.iter().map(|step| (s.site.clone(), step)))
            .map(|(site, step)| {
                let skip = step.action == "skip";
                RolloutStepRecord {
                    rollout_id: 0,
                    site,
                    server_id: step.server.clone(),
                    module: step.module.clone(),
                    layer: i64::from(step.layer),
                    from_version: step.from_version.clone(),
                    to_version: step.to_version.clone(),
                    state: if skip {
                        StepState::Skipped
                    } else {
                        StepState::Pending
                    },
                    attempts: 0,
                    next_attempt_at: None,
                    command_id: None,
                    rollback_command_id: None,
                    ordered_at: None,
                    message: skip.then(|| {
                        format!(
                            "{} already installed",
                            step.from_version.as_deref().unwrap_or("?")
                        )
                    }),
                    started_at: None,
                    finished_at: None,
                    database_decided_by: None,
                }
            })
            .collect();
        let rollout = RolloutRecord {
            id: 0,
            release: self.release.clone(),
            strategy,
            state: RolloutState::Running,
            reason: None,
            opened_wave: 1,
            wave_ready_at: None,
            acknowledged_failures: 0,
            created_by: actor.to_owned(),
            created_at: now,
            finished_at: None,
        };
        (rollout, sites, steps)
    }
}

/// Computes the plan. Errors name the field at fault.
pub fn plan(
    strategy: &Strategy,
    target: &Target,
    release: &ReleaseRecord,
    servers: &[ServerRecord],
    calendars: &HashMap<String, Calendar>,
    estimates: &Estimates,
    now: DateTime<Utc>,
) -> Result<Plan, Invalid> {
    strategy.validate()?;
    let packages: BTreeMap<&str, &str> = release
        .packages
        .iter()
        .map(|p| (p.module.as_str(), p.version.as_str()))
        .collect();
    // The platforms the release's agent packages are built for: a server
    // of another platform keeps its agent.
    let agent_platforms: BTreeSet<&str> = release
        .packages
        .iter()
        .filter(|p| p.module == AGENT_MODULE && !p.platform.is_empty())
        .map(|p| p.platform.as_str())
        .collect();
    let mut warnings = Vec::new();
    // Each site's servers, found once (a fleet has thousands of sites).
    let mut by_site: HashMap<&str, Vec<&ServerRecord>> = HashMap::new();
    for server in servers {
        by_site
            .entry(server.site.as_str())
            .or_default()
            .push(server);
    }
    let sites = sites(target, release, &by_site, &packages, &mut warnings)?;
    let waves = strategy.waves(&sites)?;
    let modules: BTreeSet<String> = packages.keys().map(|m| (*m).to_owned()).collect();
    let layer_of = strategy.layers(&modules);

    let mut plans = Vec::new();
    let mut wave_start = now;
    for (w, wave) in waves.iter().enumerate() {
        let mut longest = Duration::zero();
        for site in wave {
            let hosted = by_site
                .get(site.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let steps = steps(
                site,
                hosted,
                &packages,
                &agent_platforms,
                &layer_of,
                &mut warnings,
            );
            let layers = layers(&steps);
            let (duration, downtime) = estimates.site(layers.iter().map(Vec::as_slice));
            let always = Calendar::always();
            let calendar = calendars.get(site).unwrap_or(&always);
            let slot = calendar.slot(wave_start, duration);
            longest = longest.max(duration);
            if slot.is_none() {
                warnings.push(format!(
                    "site {site}: no maintenance window in the next eight days is long enough for its estimated {} s",
                    duration.num_seconds()
                ));
            }
            plans.push(SitePlan {
                site: site.clone(),
                wave: u32::try_from(w + 1).unwrap_or(u32::MAX),
                time_zone: calendar.time_zone().name().to_owned(),
                layers,
                steps,
                estimated_seconds: duration.num_seconds(),
                expected_downtime_ms: downtime.num_milliseconds(),
                planned_start: slot.map(|s| s.start),
                planned_end: slot.map(|s| s.start + duration),
                planned_start_local: slot.map(|s| calendar.local(s.start)),
                preflight: Vec::new(),
            });
        }
        wave_start += longest;
    }
    Ok(Plan {
        release: release.version.clone(),
        waves,
        sites: plans,
        warnings,
    })
}

/// The sites the target names (or matches) that host a module of the
/// release; a named site that hosts none is left out with a warning.
fn sites(
    target: &Target,
    release: &ReleaseRecord,
    by_site: &HashMap<&str, Vec<&ServerRecord>>,
    packages: &BTreeMap<&str, &str>,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, Invalid> {
    let hosts = |site: &str| {
        by_site.get(site).is_some_and(|servers| {
            servers.iter().any(|s| {
                s.modules
                    .iter()
                    .any(|m| packages.contains_key(m.name.as_str()))
            })
        })
    };
    let known: BTreeSet<&str> = by_site.keys().copied().collect();
    let sites: Vec<String> = if !target.sites.is_empty() {
        for site in &target.sites {
            if !known.contains(site.as_str()) {
                return Err(Invalid {
                    field: "sites".into(),
                    message: format!("no site named \"{site}\" has ever connected"),
                });
            }
        }
        let (hosting, not): (Vec<String>, Vec<String>) =
            target.sites.iter().cloned().partition(|s| hosts(s));
        for site in not {
            warnings.push(format!(
                "site {site} hosts no module of release {}; left out",
                release.version
            ));
        }
        hosting
    } else {
        known
            .iter()
            .filter(|s| target.site_pattern.as_deref().is_none_or(|p| glob(p, s)))
            .filter(|s| hosts(s))
            .map(|s| (*s).to_owned())
            .collect()
    };
    if sites.is_empty() {
        return Err(Invalid {
            field: if target.site_pattern.is_some() {
                "site_pattern"
            } else {
                "sites"
            }
            .into(),
            message: format!(
                "no site to update: none of them hosts a module of release {}",
                release.version
            ),
        });
    }
    Ok(sites)
}

/// A site's steps: every module of the release on every server of the
/// site (`servers`), to install or to skip (already at that version or
/// newer), in layer order. An offline server is warned of.
fn steps(
    site: &str,
    servers: &[&ServerRecord],
    packages: &BTreeMap<&str, &str>,
    agent_platforms: &BTreeSet<&str>,
    layer_of: &BTreeMap<String, u32>,
    warnings: &mut Vec<String>,
) -> Vec<StepPlan> {
    let mut steps = Vec::new();
    for server in servers {
        if !server.online {
            warnings.push(format!(
                "server {} of site {site} is offline: its installs wait for it to reconnect",
                server.id
            ));
        }
        for module in &server.modules {
            let Some(to) = packages.get(module.name.as_str()) else {
                continue;
            };
            if module.name == AGENT_MODULE && !agent_platforms.is_empty() {
                let platform = platform_of_os(&server.os);
                if !agent_platforms.contains(platform.as_str()) {
                    warnings.push(format!(
                        "server {} of site {site}: the release carries no {AGENT_MODULE} package for its platform ({platform}); its agent stays as it is",
                        server.id
                    ));
                    continue;
                }
            }
            let installed = module
                .installed_version
                .as_deref()
                .and_then(|v| Version::parse(v).ok());
            let newer_or_same = match (installed, Version::parse(to).ok()) {
                (Some(have), Some(want)) => have >= want,
                _ => false,
            };
            steps.push(StepPlan {
                server: server.id.clone(),
                module: module.name.clone(),
                layer: layer_of.get(&module.name).copied().unwrap_or(0),
                from_version: module.installed_version.clone(),
                to_version: (*to).to_owned(),
                action: if newer_or_same { "skip" } else { "install" }.into(),
            });
        }
    }
    steps.sort_by(|a, b| (a.layer, &a.server, &a.module).cmp(&(b.layer, &b.server, &b.module)));
    steps
}

/// The modules a site installs, layer by layer (those of a layer go side
/// by side).
fn layers(steps: &[StepPlan]) -> Vec<Vec<String>> {
    let mut layers: Vec<Vec<String>> = Vec::new();
    for step in steps.iter().filter(|s| s.action == "install") {
        let l = usize::try_from(step.layer).unwrap_or(0);
        while layers.len() <= l {
            layers.push(Vec::new());
        }
        if !layers[l].contains(&step.module) {
            layers[l].push(step.module.clone());
        }
    }
    layers.retain(|l| !l.is_empty());
    layers
}

/// Whether `name` matches `pattern`, where `*` matches any characters.
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failure is a test failure
mod tests {
    use super::*;

    #[test]
    fn site_patterns() {
        assert!(glob("acme-*", "acme-paris"));
        assert!(glob("*-paris", "acme-paris"));
        assert!(glob("a*m*s", "acme-paris"));
        assert!(!glob("acme-*", "globex-paris"));
        assert!(!glob("acme", "acme-paris"));
        assert!(glob("*", "anything"));
    }

    #[test]
    fn a_site_takes_the_longest_module_of_each_layer_in_turn() {
        let history = [
            Estimate {
                module: "database".into(),
                duration_ms: 10_000,
                downtime_ms: 8_000,
            },
            Estimate {
                module: "ecommerce".into(),
                duration_ms: 4_000,
                downtime_ms: 300,
            },
            Estimate {
                module: "ecommerce".into(),
                duration_ms: 6_000,
                downtime_ms: 500,
            },
            Estimate {
                module: "ecommerce".into(),
                duration_ms: 5_000,
                downtime_ms: 400,
            },
        ];
        let estimates = Estimates::new(&history, Duration::seconds(60));
        assert_eq!(
            estimates.install("ecommerce"),
            Duration::seconds(5),
            "the median"
        );
        assert_eq!(
            estimates.install("phygitalapi"),
            Duration::seconds(60),
            "no history"
        );
        let layers = [
            vec!["database".to_owned()],
            vec!["ecommerce".to_owned(), "phygitalapi".to_owned()],
        ];
        let (duration, downtime) = estimates.site(layers.iter().map(Vec::as_slice));
        assert_eq!(duration, Duration::seconds(70));
        assert_eq!(downtime, Duration::seconds(68));
    }
}
