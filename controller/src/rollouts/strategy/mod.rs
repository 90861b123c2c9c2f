//! What a rollout is asked to do, and a site's maintenance windows: the
//! module order as a dependency graph, the waves across sites, the failure
//! policy, the users' notice; and the calendar arithmetic that finds the next
//! slot an install fits in, in the site's own time zone. Pure: no I/O, the
//! time is always given.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a rollout goes about it. Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    /// Module -> the modules it waits for, on every server of the site.
    /// Default: `database` -> `integration` -> `gestioncommerciale`,
    /// `ecommerce`, `phygitalapi` (those three in parallel). Modules not
    /// named wait for nothing.
    #[serde(default = "default_order")]
    pub order: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub waves: Waves,
    #[serde(default)]
    pub failure: FailurePolicy,
    /// Warn the site's users before its maintenance.
    #[serde(default)]
    pub notice: Option<Notice>,
    /// How long an install of a module with no history is expected to take,
    /// in seconds, to decide whether it fits in a window.
    #[serde(default = "default_install_seconds")]
    pub default_install_seconds: u64,
    /// What a site rollback does to a database its update upgraded: wait
    /// for an operator to choose (`ask`, the default), or decide in
    /// advance (`restore` its backup, `keep` it at the new version).
    #[serde(default)]
    pub database: DatabaseOnRollback,
    /// How long a new version of the agent has on each server to start,
    /// connect and stay connected before the old one is put back (seconds);
    /// absent: each agent's own `update_budget_seconds` (300 by default).
    /// Left out when absent, so that a controller of the previous version
    /// sharing the database still reads the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_update_budget_seconds: Option<u64>,
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy {
            order: default_order(),
            waves: Waves::default(),
            failure: FailurePolicy::default(),
            notice: None,
            default_install_seconds: default_install_seconds(),
            database: DatabaseOnRollback::default(),
            agent_update_budget_seconds: None,
        }
    }
}

fn default_order() -> BTreeMap<String, Vec<String>> {
    let mut order = BTreeMap::new();
    order.insert("integration".to_owned(), vec!["database".to_owned()]);
    for web in ["gestioncommerciale", "ecommerce", "phygitalapi"] {
        order.insert(web.to_owned(), vec!["integration".to_owned()]);
    }
    order
}

fn default_install_seconds() -> u64 {
    300
}

/// Sites in waves: the canaries first, then batches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Waves {
    /// Sites that go first, alone in the first wave.
    #[serde(default)]
    pub canary: Vec<String>,
    /// Sites per wave after the canaries.
    pub batch_size: Option<u32>,
    /// Or a percentage of the remaining sites per wave (rounded up).
    pub batch_percent: Option<u32>,
    /// Between waves: wait for an operator to resume (`manual`), or not.
    #[serde(default)]
    pub gate: Gate,
    /// Between waves: wait this long (seconds) before the next one starts.
    #[serde(default)]
    pub pause_seconds: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    #[default]
    None,
    Manual,
}

/// What happens when installs fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailurePolicy {
    /// At a site where a module failed for good.
    #[serde(default)]
    pub site: SiteFailure,
    /// Pause the rollout when more sites than this failed. With neither this
    /// nor the percentage, the first failed site pauses it.
    pub max_failed_sites: Option<u32>,
    /// Or when more than this percentage of the rollout's sites failed.
    pub max_failed_percent: Option<u32>,
    /// How many times a failed install is tried again.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The wait before the first retry, doubled for each next one (seconds).
    #[serde(default = "default_backoff")]
    pub retry_backoff_seconds: u64,
    /// An install with no progress for this long (seconds) is stuck: failed.
    #[serde(default = "default_stuck")]
    pub stuck_after_seconds: u64,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            site: SiteFailure::default(),
            max_failed_sites: None,
            max_failed_percent: None,
            retries: default_retries(),
            retry_backoff_seconds: default_backoff(),
            stuck_after_seconds: default_stuck(),
        }
    }
}

fn default_retries() -> u32 {
    1
}
fn default_backoff() -> u64 {
    30
}
fn default_stuck() -> u64 {
    1800
}

impl FailurePolicy {
    /// Whether `failed` of `total` sites is past the threshold.
    pub fn tripped(&self, failed: u32, total: u32) -> bool {
        match (self.max_failed_sites, self.max_failed_percent) {
            (None, None) => failed > 0,
            (count, percent) => {
                count.is_some_and(|c| failed > c)
                    || percent
                        .is_some_and(|p| u64::from(failed) * 100 > u64::from(p) * u64::from(total))
            }
        }
    }

    /// When to try again after `attempts` tries, or `None` when they are spent.
    pub fn retry_after(&self, attempts: u32) -> Option<Duration> {
        (attempts <= self.retries).then(|| {
            let factor = 1u64 << attempts.saturating_sub(1).min(16);
            seconds(self.retry_backoff_seconds.saturating_mul(factor))
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SiteFailure {
    /// Roll every server of the site back to the versions it had, in
    /// reverse module order.
    #[default]
    Rollback,
    /// Leave the site as it is and wait for an operator.
    Stop,
}

/// What a site rollback does to a database its update upgraded. Its files
/// always go back; restoring the database's backup throws away what was
/// written since the upgrade, so by default a person decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseOnRollback {
    /// The site waits for an operator, who sees what a restore would
    /// discard, then restores the backup or keeps the database.
    #[default]
    Ask,
    /// Restore the backup taken before the upgrade (recorded with what it
    /// discarded).
    Restore,
    /// Keep the database at the new version.
    Keep,
}

/// The users' warning: a webhook `POST` before the site's maintenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    pub webhook_url: String,
    /// How long before the planned start (seconds).
    #[serde(default = "default_lead")]
    pub lead_seconds: u64,
}

fn default_lead() -> u64 {
    900
}

/// The longest duration any setting may give: a year, in seconds.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// Seconds as a duration; settings are bounded by [`MAX_SECONDS`].
pub fn seconds(value: u64) -> Duration {
    Duration::seconds(i64::try_from(value.min(MAX_SECONDS)).unwrap_or(0))
}

/// Bad strategy input, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

impl Strategy {
    /// Checks what the types cannot: the graph has no cycle, numbers are sane.
    pub fn validate(&self) -> Result<(), Invalid> {
        let all: BTreeSet<String> = self
            .order
            .iter()
            .flat_map(|(m, deps)| std::iter::once(m.clone()).chain(deps.iter().cloned()))
            .collect();
        if let Some(cycle) = find_cycle(&self.order, &all) {
            return Err(invalid(
                "order",
                format!("the module order has a cycle: {}", cycle.join(" -> ")),
            ));
        }
        if self.waves.batch_size == Some(0) {
            return Err(invalid("waves.batch_size", "must be at least 1"));
        }
        if let Some(p) = self.waves.batch_percent
            && !(1..=100).contains(&p)
        {
            return Err(invalid("waves.batch_percent", "must be between 1 and 100"));
        }
        if self.waves.batch_size.is_some() && self.waves.batch_percent.is_some() {
            return Err(invalid(
                "waves",
                "give batch_size or batch_percent, not both",
            ));
        }
        if let Some(p) = self.failure.max_failed_percent
            && p > 100
        {
            return Err(invalid("failure.max_failed_percent", "must be at most 100"));
        }
        let mut seconds = vec![
            (
                "failure.stuck_after_seconds",
                self.failure.stuck_after_seconds,
                1,
            ),
            (
                "failure.retry_backoff_seconds",
                self.failure.retry_backoff_seconds,
                0,
            ),
            ("waves.pause_seconds", self.waves.pause_seconds, 0),
            ("default_install_seconds", self.default_install_seconds, 1),
        ];
        if let Some(notice) = &self.notice {
            seconds.push(("notice.lead_seconds", notice.lead_seconds, 0));
        }
        for (field, value, least) in seconds {
            if value < least || value > MAX_SECONDS {
                return Err(invalid(
                    field,
                    format!("must be between {least} and {MAX_SECONDS} seconds (a year)"),
                ));
            }
        }
        if let Some(budget) = self.agent_update_budget_seconds
            && (!(5..=86_400).contains(&budget) || budget >= self.failure.stuck_after_seconds)
        {
            return Err(invalid(
                "agent_update_budget_seconds",
                format!(
                    "must be at least 5 seconds, at most a day, and under failure.stuck_after_seconds ({} s), or the step is judged stuck while the new agent is on trial",
                    self.failure.stuck_after_seconds
                ),
            ));
        }
        if self.failure.retries > 20 {
            return Err(invalid("failure.retries", "must be at most 20"));
        }
        let mut seen = BTreeSet::new();
        if let Some(twice) = self.waves.canary.iter().find(|c| !seen.insert(*c)) {
            return Err(invalid(
                "waves.canary",
                format!("site \"{twice}\" is named twice"),
            ));
        }
        if let Some(notice) = &self.notice
            && !(notice.webhook_url.starts_with("http://")
                || notice.webhook_url.starts_with("https://"))
        {
            return Err(invalid(
                "notice.webhook_url",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }

    /// For each of `modules`, the modules among them it waits for, directly
    /// or through modules not in the set.
    pub fn dependencies(&self, modules: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<String>> {
        modules
            .iter()
            .map(|module| {
                let mut found = BTreeSet::new();
                let mut seen = BTreeSet::new();
                let mut stack: Vec<&String> =
                    self.order.get(module).into_iter().flatten().collect();
                while let Some(dep) = stack.pop() {
                    if !seen.insert(dep.clone()) {
                        continue;
                    }
                    if modules.contains(dep) {
                        found.insert(dep.clone());
                    } else {
                        stack.extend(self.order.get(dep).into_iter().flatten());
                    }
                }
                (module.clone(), found)
            })
            .collect()
    }

    /// Each module's layer: 0 waits for nothing, n waits for layer n-1.
    pub fn layers(&self, modules: &BTreeSet<String>) -> BTreeMap<String, u32> {
        let deps = self.dependencies(modules);
        let mut layer: BTreeMap<String, u32> = BTreeMap::new();
        // The graph is acyclic (validated), so this settles in |modules| rounds.
        for _ in 0..=modules.len() {
            for (module, needs) in &deps {
                let l = needs
                    .iter()
                    .map(|d| layer.get(d).map_or(1, |l| l + 1))
                    .max()
                    .unwrap_or(0);
                layer.insert(module.clone(), l);
            }
        }
        layer
    }

    /// The sites in waves: canaries first, then batches in name order.
    pub fn waves(&self, sites: &[String]) -> Result<Vec<Vec<String>>, Invalid> {
        let mut waves = Vec::new();
        for canary in &self.waves.canary {
            if !sites.contains(canary) {
                return Err(invalid(
                    "waves.canary",
                    format!("site \"{canary}\" is not among the rollout's sites"),
                ));
            }
        }
        if !self.waves.canary.is_empty() {
            waves.push(self.waves.canary.clone());
        }
        let rest: Vec<String> = sites
            .iter()
            .filter(|s| !self.waves.canary.contains(s))
            .cloned()
            .collect();
        if rest.is_empty() {
            return Ok(waves);
        }
        let size = match (self.waves.batch_size, self.waves.batch_percent) {
            (Some(n), _) => usize::try_from(n).unwrap_or(usize::MAX),
            (None, Some(p)) => (rest.len() * usize::try_from(p).unwrap_or(100)).div_ceil(100),
            (None, None) => rest.len(),
        }
        .max(1);
        waves.extend(rest.chunks(size).map(<[String]>::to_vec));
        Ok(waves)
    }
}

/// A cycle in `order` among `all`, as the path that closes it.
fn find_cycle(
    order: &BTreeMap<String, Vec<String>>,
    all: &BTreeSet<String>,
) -> Option<Vec<String>> {
    fn visit(
        node: &String,
        order: &BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.clone());
        for dep in order.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(dep, order, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    all.iter()
        .find_map(|node| visit(node, order, &mut Vec::new(), &mut done))
}

/// A site's maintenance windows as the API takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// An IANA time zone, e.g. `Europe/Paris`.
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$")]
    pub time_zone: String,
    /// When installs may run. None: any time.
    #[serde(default)]
    pub windows: Vec<Window>,
}

/// An allow-window, in the site's time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// The days it opens (`mon` ... `sun`); every day when empty.
    #[serde(default)]
    #[schema(value_type = Vec<String>, pattern = "^(mon|tue|wed|thu|fri|sat|sun)$")]
    pub days: Vec<String>,
    /// Opens at, `HH:MM` or `HH:MM:SS`.
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$")]
    pub start: String,
    /// Closes at; at or before `start` means the next day.
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$")]
    pub end: String,
}

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: Tz,
    windows: Vec<(Vec<Weekday>, NaiveTime, NaiveTime)>,
}

/// When an install can run: from `start`, until `end` (`None`: no window
/// closes on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

impl Schedule {
    pub fn calendar(&self) -> Result<Calendar, Invalid> {
        let tz: Tz = self.time_zone.parse().map_err(|_| {
            invalid(
                "time_zone",
                format!(
                    "\"{}\" is not an IANA time zone (e.g. Europe/Paris)",
                    self.time_zone
                ),
            )
        })?;
        let mut windows = Vec::new();
        for (i, w) in self.windows.iter().enumerate() {
            let time = |field: &str, text: &str| {
                NaiveTime::parse_from_str(text, "%H:%M:%S")
                    .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M"))
                    .map_err(|_| {
                        invalid(
                            format!("windows[{i}].{field}"),
                            format!("\"{text}\" is not a time of day (HH:MM or HH:MM:SS)"),
                        )
                    })
            };
            let days = w
                .days
                .iter()
                .map(|d| {
                    d.parse::<Weekday>().map_err(|_| {
                        invalid(
                            format!("windows[{i}].days"),
                            format!("\"{d}\" is not a day (mon ... sun)"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            windows.push((days, time("start", &w.start)?, time("end", &w.end)?));
        }
        Ok(Calendar { tz, windows })
    }
}

impl Calendar {
    /// Always open, in UTC.
    pub fn always() -> Calendar {
        Calendar {
            tz: chrono_tz::UTC,
            windows: Vec::new(),
        }
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The earliest slot at or after `now` in which `need` fits before the
    /// window closes; `None` when no window in the coming eight days is long
    /// enough.
    pub fn slot(&self, now: DateTime<Utc>, need: Duration) -> Option<Slot> {
        if self.windows.is_empty() {
            return Some(Slot {
                start: now,
                end: None,
            });
        }
        let today = now.with_timezone(&self.tz).date_naive();
        let mut best: Option<Slot> = None;
        for offset in -1..=8 {
            let Some(day) = today.checked_add_signed(Duration::days(offset)) else {
                continue;
            };
            for (days, open, close) in &self.windows {
                if !days.is_empty() && !days.contains(&day.weekday()) {
                    continue;
                }
                let (Some(opens), Some(closes)) = (
                    self.at(day, *open),
                    self.at(close_day(day, *open, *close), *close),
                ) else {
                    continue;
                };
                let start = opens.max(now);
                if start + need <= closes && best.is_none_or(|b| start < b.start) {
                    best = Some(Slot {
                        start,
                        end: Some(closes),
                    });
                }
            }
        }
        best
    }

    /// A local time on a day as UTC; a time skipped by a DST change (in
    /// the spring-forward gap) is the instant of the change.
    fn at(&self, day: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
        let local = day.and_time(time);
        if let Some(t) = self.tz.from_local_datetime(&local).earliest() {
            return Some(t.with_timezone(&Utc));
        }
        // The last valid minute before the gap, plus that minute.
        let floor = local.with_second(0)?.with_nanosecond(0)?;
        (1..=180).find_map(|k| {
            self.tz
                .from_local_datetime(&(floor - Duration::minutes(k)))
                .earliest()
                .map(|t| t.with_timezone(&Utc) + Duration::minutes(1))
        })
    }

    /// A time in the site's zone, for messages.
    pub fn local(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.tz)
            .format("%a %Y-%m-%d %H:%M:%S %Z")
            .to_string()
    }
}

/// The day a window opened on `day` closes.
fn close_day(day: NaiveDate, open: NaiveTime, close: NaiveTime) -> NaiveDate {
    if close <= open {
        day.succ_opt().unwrap_or(day)
    } else {
        day
    }
}

#[cfg(test)]
mod tests;
