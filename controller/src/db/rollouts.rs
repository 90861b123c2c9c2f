//! The rollouts' SQL: their state machine's rows, the audit log, site
//! schedules, and what the engine reads of installs.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::{Database, Tx};
use crate::states::{InstallState, RolloutState, SiteState, StepState};

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct RolloutRecord {
    pub id: i64,
    pub release: String,
    /// The strategy, JSON.
    pub strategy: String,
    pub state: RolloutState,
    pub reason: Option<String>,
    /// Waves up to this one may start.
    pub opened_wave: i64,
    /// When the next wave may open, while pausing between waves.
    pub wave_ready_at: Option<DateTime<Utc>>,
    /// Failed sites an operator resumed past: the threshold counts beyond them.
    pub acknowledged_failures: i64,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A site of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct RolloutSiteRecord {
    pub rollout_id: i64,
    pub site: String,
    pub wave: i64,
    pub state: SiteState,
    pub message: Option<String>,
    pub planned_start: Option<DateTime<Utc>>,
    pub planned_end: Option<DateTime<Utc>>,
    pub notice_sent_at: Option<DateTime<Utc>>,
    pub notice_result: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// JSON: per server, its preflight's answer (see `rollouts::decide`).
    pub preflight: Option<String>,
    /// When the servers were last asked for their preflight.
    pub preflight_at: Option<DateTime<Utc>>,
    /// Who let the site start despite a failed preflight.
    pub preflight_override_by: Option<String>,
}

/// One module on one server in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct RolloutStepRecord {
    pub rollout_id: i64,
    pub site: String,
    pub server_id: String,
    pub module: String,
    pub layer: i64,
    pub from_version: Option<String>,
    pub to_version: String,
    pub state: StepState,
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub command_id: Option<String>,
    pub rollback_command_id: Option<String>,
    /// When the latest install or restore was ordered.
    pub ordered_at: Option<DateTime<Utc>>,
    pub message: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Who decided to restore its database (an operator, or `flotilla`
    /// for a strategy that said so in advance).
    pub database_decided_by: Option<String>,
}

/// A line of a rollout's audit log.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct RolloutLogRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// An install a rollout ordered, found by its command id.
#[derive(Debug, Clone, FromRow)]
pub struct CommandInstall {
    pub server_id: String,
    pub command_id: String,
    pub install_id: String,
    pub state: InstallState,
    pub phase: Option<String>,
    pub message: Option<String>,
    pub downtime_ms: Option<i64>,
    pub rollback_error: Option<String>,
    /// A failed install the agent put the previous version back after.
    pub rolled_back: bool,
    /// What the failing hook wrote to stderr, one line per line.
    pub hook_output: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The latest progress line, if any.
    pub last_event_at: Option<DateTime<Utc>>,
}

/// A rollout's row with its sites and steps, as read in one snapshot.
pub type RolloutRows = (
    RolloutRecord,
    Vec<RolloutSiteRecord>,
    Vec<RolloutStepRecord>,
);

/// A past successful install, to estimate the next.
#[derive(Debug, Clone, FromRow)]
pub struct Estimate {
    pub module: String,
    pub duration_ms: i64,
    pub downtime_ms: i64,
}

/// A site's maintenance windows as stored.
#[derive(Debug, Clone, FromRow)]
pub struct ScheduleRecord {
    pub site: String,
    pub time_zone: String,
    /// JSON: `[{days, start, end}]`.
    pub windows: String,
}

/// What the engine changed in one pass over a rollout, written together.
#[derive(Debug, Default)]
pub struct RolloutChanges {
    pub rollout: Option<RolloutRecord>,
    pub sites: Vec<RolloutSiteRecord>,
    pub steps: Vec<RolloutStepRecord>,
    /// `(actor, action, detail)`.
    pub log: Vec<(String, String, String)>,
}

impl RolloutChanges {
    pub fn is_empty(&self) -> bool {
        self.rollout.is_none()
            && self.sites.is_empty()
            && self.steps.is_empty()
            && self.log.is_empty()
    }
}

/// The last successful installs (of one module with `$module`, a
/// condition with a parameter) and how long each took, newest first, at
/// most 20 of each module (`$number`: a numbering column, or nothing for
/// one module read through `installs_for_estimates`). Durations are
/// arithmetic on dates, which each engine writes its own way.
macro_rules! estimates {
    (sqlite, $module:tt, $number:tt) => {
        estimates!(@ "CAST((julianday(finished_at) - julianday(started_at)) * 86400000 AS INTEGER)", $module, $number)
    };
    (postgres, $module:tt, $number:tt) => {
        estimates!(@ "CAST(EXTRACT(EPOCH FROM (finished_at - started_at)) * 1000 AS BIGINT)", $module, $number)
    };
    (@ $duration:literal, "", $number:tt) => {
        concat!(
            "SELECT module, duration_ms, downtime_ms FROM (SELECT module, ", $duration, " AS duration_ms, ",
            "COALESCE(downtime_ms, 0) AS downtime_ms, ", $number, " FROM installs ",
            "WHERE state = 'succeeded' AND finished_at IS NOT NULL ",
            "AND (command_id IS NULL OR command_id NOT LIKE 'rollout-%-rollback-%')) AS numbered WHERE n <= 20"
        )
    };
    (@ $duration:literal, $module:tt, "") => {
        concat!(
            "SELECT module, ", $duration, " AS duration_ms, COALESCE(downtime_ms, 0) AS downtime_ms ",
            "FROM installs WHERE state = 'succeeded' ", $module, " AND finished_at IS NOT NULL ",
            "AND (command_id IS NULL OR command_id NOT LIKE 'rollout-%-rollback-%') ",
            "ORDER BY finished_at DESC LIMIT 20"
        )
    };
}

impl Database {
    /// Stores a new rollout with its sites and steps; returns its id.
    ///
    /// A server belongs to one unfinished rollout at a time: when any of
    /// `steps`' servers has work in another, nothing is written and the
    /// clashes come back as `Err((server, rollout id, release))`. The check
    /// and the writes are one immediate transaction, so two creations
    /// cannot both pass the check.
    pub async fn create_rollout(
        &self,
        (rollout, sites, steps): &RolloutRows,
        detail: &str,
    ) -> sqlx::Result<Result<i64, Vec<(String, i64, String)>>> {
        let mut tx = self.begin_alone().await?;
        let wanted: std::collections::BTreeSet<&str> =
            steps.iter().map(|s| s.server_id.as_str()).collect();
        let clashes: Vec<(String, i64, String)> = servers_in_active_rollouts(&mut tx)
            .await?
            .into_iter()
            .filter(|(server, _, _)| wanted.contains(server.as_str()))
            .collect();
        if !clashes.is_empty() {
            return Ok(Err(clashes));
        }
        let id: i64 = on_tx!(tx, |c, d| {
            sqlx::query_scalar(d.sql(
            "INSERT INTO rollouts (release, strategy, state, reason, opened_wave, created_by, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        ))
        .bind(&rollout.release)
        .bind(&rollout.strategy)
        .bind(rollout.state)
        .bind(&rollout.reason)
        .bind(rollout.opened_wave)
        .bind(&rollout.created_by)
        .bind(rollout.created_at)
        .fetch_one(c)
        .await
        })?;
        // A few statements however many rows: a rollout of thousands of
        // sites is written in milliseconds, not a statement per row.
        let sites_json = serde_json::Value::Array(
            sites
                .iter()
                .map(|site| {
                    serde_json::json!([site.site, site.wave, site.state.as_str(), site.message])
                })
                .collect(),
        )
        .to_string();
        on_tx!(tx, |c, d| {
            sqlx::query(d.pick(
            "INSERT INTO rollout_sites (rollout_id, site, wave, state, message) \
             SELECT ?, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3 FROM json_each(?) j",
            "INSERT INTO rollout_sites (rollout_id, site, wave, state, message) \
             SELECT ?, j.value ->> 0, (j.value ->> 1)::bigint, j.value ->> 2, j.value ->> 3 \
             FROM json_array_elements(?::json) j",
        ))
        .bind(id)
        .bind(&sites_json)
        .execute(c)
        .await
    .map(|done| done.rows_affected())
        })?;
        let steps_json = serde_json::Value::Array(
            steps
                .iter()
                .map(|step| {
                    serde_json::json!([
                        step.site,
                        step.server_id,
                        step.module,
                        step.layer,
                        step.from_version,
                        step.to_version,
                        step.state.as_str(),
                        step.message
                    ])
                })
                .collect(),
        )
        .to_string();
        on_tx!(tx, |c, d| {
            sqlx::query(d.pick(
            "INSERT INTO rollout_steps (rollout_id, site, server_id, module, layer, from_version, to_version, state, message) \
             SELECT ?, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, \
                    j.value ->> 5, j.value ->> 6, j.value ->> 7 FROM json_each(?) j",
            "INSERT INTO rollout_steps (rollout_id, site, server_id, module, layer, from_version, to_version, state, message) \
             SELECT ?, j.value ->> 0, j.value ->> 1, j.value ->> 2, (j.value ->> 3)::bigint, j.value ->> 4, \
                    j.value ->> 5, j.value ->> 6, j.value ->> 7 FROM json_array_elements(?::json) j",
        ))
        .bind(id)
        .bind(&steps_json)
        .execute(c)
        .await
    .map(|done| done.rows_affected())
        })?;
        log(
            &mut tx,
            id,
            rollout.created_at,
            &rollout.created_by,
            "created",
            detail,
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(id))
    }

    /// Every rollout, newest first.
    pub async fn rollouts(&self) -> sqlx::Result<Vec<RolloutRecord>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(
            d.sql("SELECT * FROM rollouts ORDER BY id DESC")
        )
        .fetch_all(c)
        .await)
    }

    /// The rollouts the engine still has work for.
    pub async fn active_rollouts(&self) -> sqlx::Result<Vec<i64>> {
        on_pool!(self.pool, |c, d| sqlx::query_scalar(d.sql(
            "SELECT id FROM rollouts WHERE finished_at IS NULL ORDER BY id"
        ))
        .fetch_all(c)
        .await)
    }

    /// A rollout with its sites (by wave, then name), steps and log, read
    /// in one transaction so that they agree with each other.
    #[allow(clippy::type_complexity)]
    pub async fn rollout(
        &self,
        id: i64,
    ) -> sqlx::Result<
        Option<(
            RolloutRecord,
            Vec<RolloutSiteRecord>,
            Vec<RolloutStepRecord>,
            Vec<RolloutLogRecord>,
        )>,
    > {
        let mut tx = self.snapshot().await?;
        let Some((rollout, sites, steps)) = read_rollout(&mut tx, id).await? else {
            return Ok(None);
        };
        let log = on_tx!(tx, |c, d| {
            sqlx::query_as(d.sql(
            "SELECT seq, at, actor, action, detail FROM rollout_log WHERE rollout_id = ? ORDER BY seq",
        ))
        .bind(id)
        .fetch_all(c)
        .await
        })?;
        tx.commit().await?;
        Ok(Some((rollout, sites, steps, log)))
    }

    /// A rollout with its sites (by wave, then name) and steps: what the
    /// engine decides from, without the log; one snapshot.
    pub async fn rollout_state(&self, id: i64) -> sqlx::Result<Option<RolloutRows>> {
        let mut tx = self.snapshot().await?;
        let state = read_rollout(&mut tx, id).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// Writes what changed in one pass, with its log lines, at once.
    pub async fn save_rollout(
        &self,
        id: i64,
        at: DateTime<Utc>,
        changes: &RolloutChanges,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        if let Some(r) = &changes.rollout {
            on_tx!(tx, |c, d| sqlx::query(d.sql(
                "UPDATE rollouts SET state = ?, reason = ?, opened_wave = ?, wave_ready_at = ?, \
                 acknowledged_failures = ?, finished_at = ? WHERE id = ?",
            ))
            .bind(r.state)
            .bind(&r.reason)
            .bind(r.opened_wave)
            .bind(r.wave_ready_at)
            .bind(r.acknowledged_failures)
            .bind(r.finished_at)
            .bind(id)
            .execute(c)
            .await
            .map(|done| done.rows_affected()))?;
        }
        if !changes.sites.is_empty() {
            save_sites(&mut tx, id, &changes.sites).await?;
        }
        if !changes.steps.is_empty() {
            save_steps(&mut tx, id, &changes.steps).await?;
        }
        match changes.log.as_slice() {
            [] => {}
            [(actor, action, detail)] => log(&mut tx, id, at, actor, action, detail).await?,
            lines => log_lines(&mut tx, id, at, lines).await?,
        }
        tx.commit().await
    }

    /// The installs a rollout's commands started (installs and rollbacks).
    pub async fn rollout_installs(&self, id: i64) -> sqlx::Result<Vec<CommandInstall>> {
        on_pool!(self.pool, |c, d| {
            sqlx::query_as(d.sql(
            "SELECT i.server_id, i.command_id, i.install_id, i.state, i.phase, i.message, i.downtime_ms, \
                    i.rollback_error, i.rolled_back, i.hook_output, i.started_at, i.finished_at, \
                    (SELECT MAX(e.at) FROM install_events e WHERE e.server_id = i.server_id AND e.install_id = i.install_id) \
                        AS last_event_at \
             FROM installs i JOIN rollout_steps r ON r.server_id = i.server_id \
                AND i.command_id IN (r.command_id, r.rollback_command_id) \
             WHERE r.rollout_id = ?",
        ))
        .bind(id)
        .fetch_all(c)
        .await
        })
    }

    /// The last successful installs of every module (at most 20 each), to
    /// estimate how long the next takes and how long users wait.
    pub async fn estimates(&self) -> sqlx::Result<Vec<Estimate>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(d.pick(
            estimates!(
                sqlite,
                "",
                "ROW_NUMBER() OVER (PARTITION BY module ORDER BY finished_at DESC) AS n"
            ),
            estimates!(
                postgres,
                "",
                "ROW_NUMBER() OVER (PARTITION BY module ORDER BY finished_at DESC) AS n"
            ),
        ))
        .fetch_all(c)
        .await)
    }

    /// [`Database::estimates`] of these modules only, each read through
    /// `installs_for_estimates` newest first.
    pub async fn estimates_of(&self, modules: &[&str]) -> sqlx::Result<Vec<Estimate>> {
        let mut estimates = Vec::new();
        for module in modules {
            estimates.extend(on_pool!(self.pool, |c, d| sqlx::query_as::<_, Estimate>(
                d.pick(
                    estimates!(sqlite, "AND module = ?", ""),
                    estimates!(postgres, "AND module = ?", ""),
                )
            )
            .bind(module)
            .fetch_all(c)
            .await)?);
        }
        Ok(estimates)
    }

    /// Sets a site's windows; `false` when there is no such site.
    pub async fn set_schedule(
        &self,
        site: &str,
        time_zone: &str,
        windows: &str,
        at: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        let done = on_pool!(self.pool, |c, d| sqlx::query(d.sql(
            "INSERT INTO site_schedules (site_id, time_zone, windows, updated_at) \
             SELECT id, ?, ?, ? FROM sites WHERE name = ? \
             ON CONFLICT (site_id) DO UPDATE SET time_zone = excluded.time_zone, \
                windows = excluded.windows, updated_at = excluded.updated_at",
        ))
        .bind(time_zone)
        .bind(windows)
        .bind(at)
        .bind(site)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(done > 0)
    }

    /// Every site's schedule.
    pub async fn schedules(&self) -> sqlx::Result<Vec<ScheduleRecord>> {
        on_pool!(self.pool, |c, d| {
            sqlx::query_as(d.sql(
            "SELECT t.name AS site, s.time_zone, s.windows FROM site_schedules s JOIN sites t ON t.id = s.site_id",
        ))
        .fetch_all(c)
        .await
        })
    }

    /// The schedules of these sites (those that have one).
    pub async fn schedules_of(&self, sites: &[&str]) -> sqlx::Result<Vec<ScheduleRecord>> {
        if sites.is_empty() {
            return Ok(Vec::new());
        }
        on_pool!(self.pool, |c, d| {
            sqlx::query_as(d.sql(
            "SELECT t.name AS site, s.time_zone, s.windows FROM site_schedules s JOIN sites t ON t.id = s.site_id \
             WHERE t.name IN (SELECT value FROM json_each(?))",
        ))
        .bind(serde_json::Value::from(sites).to_string())
        .fetch_all(c)
        .await
        })
    }
}

/// Servers with work in an unfinished rollout (a site not settled, a step
/// not excluded): `(server, rollout id, release)`.
async fn servers_in_active_rollouts(tx: &mut Tx) -> sqlx::Result<Vec<(String, i64, String)>> {
    let settled: Vec<SiteState> = SiteState::ALL
        .iter()
        .copied()
        .filter(|s| s.is_settled())
        .collect();
    let sql = format!(
        "SELECT DISTINCT st.server_id, r.id, r.release FROM rollout_steps st \
         JOIN rollouts r ON r.id = st.rollout_id \
         JOIN rollout_sites si ON si.rollout_id = st.rollout_id AND si.site = st.site \
         WHERE r.finished_at IS NULL AND st.state <> ? AND si.state NOT IN ({})",
        vec!["?"; settled.len()].join(", ")
    );
    on_tx!(*tx, |c, d| {
        let mut query = sqlx::query_as(d.owned(sql.clone())).bind(StepState::Excluded);
        for state in &settled {
            query = query.bind(*state);
        }
        query.fetch_all(c).await
    })
}

/// A rollout's row, sites and steps, inside `tx`.
async fn read_rollout(tx: &mut Tx, id: i64) -> sqlx::Result<Option<RolloutRows>> {
    let Some(rollout) = on_tx!(*tx, |c, d| sqlx::query_as(
        d.sql("SELECT * FROM rollouts WHERE id = ?")
    )
    .bind(id)
    .fetch_optional(c)
    .await)?
    else {
        return Ok(None);
    };
    let sites = on_tx!(*tx, |c, d| sqlx::query_as(d.sql(
        "SELECT * FROM rollout_sites WHERE rollout_id = ? ORDER BY wave, site"
    ))
    .bind(id)
    .fetch_all(c)
    .await)?;
    let steps = on_tx!(*tx, |c, d| {
        sqlx::query_as(d.sql(
        "SELECT * FROM rollout_steps WHERE rollout_id = ? ORDER BY site, layer, server_id, module",
    ))
    .bind(id)
    .fetch_all(c)
    .await
    })?;
    Ok(Some((rollout, sites, steps)))
}

/// Several lines of a rollout's log in one statement, numbered in order
/// after its last (a pass ordering thousands of installs logs each).
async fn log_lines(
    tx: &mut Tx,
    id: i64,
    at: DateTime<Utc>,
    lines: &[(String, String, String)],
) -> sqlx::Result<()> {
    let lines = serde_json::Value::from(
        lines
            .iter()
            .map(|(actor, action, detail)| serde_json::json!([actor, action, detail]))
            .collect::<Vec<_>>(),
    )
    .to_string();
    on_tx!(*tx, |c, d| {
        sqlx::query(d.pick(
        "INSERT INTO rollout_log (rollout_id, seq, at, actor, action, detail) \
         SELECT ?1, (SELECT COALESCE(MAX(seq), 0) FROM rollout_log WHERE rollout_id = ?1) + j.key + 1, ?2, \
                j.value ->> 0, j.value ->> 1, j.value ->> 2 FROM json_each(?3) j",
        "INSERT INTO rollout_log (rollout_id, seq, at, actor, action, detail) \
         SELECT ?1, (SELECT COALESCE(MAX(seq), 0) FROM rollout_log WHERE rollout_id = ?1) + j.n, ?2, \
                j.value ->> 0, j.value ->> 1, j.value ->> 2 \
         FROM json_array_elements(?3::json) WITH ORDINALITY AS j(value, n)",
    ))
    .bind(id)
    .bind(at)
    .bind(&lines)
    .execute(c)
    .await
    .map(|_| ())
    })
}

async fn log(
    tx: &mut Tx,
    id: i64,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    detail: &str,
) -> sqlx::Result<()> {
    on_tx!(*tx, |c, d| {
        sqlx::query(d.sql(
        "INSERT INTO rollout_log (rollout_id, seq, at, actor, action, detail) \
         VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM rollout_log WHERE rollout_id = ?), ?, ?, ?, ?)",
    ))
    .bind(id)
    .bind(id)
    .bind(at)
    .bind(actor)
    .bind(action)
    .bind(detail)
    .execute(c)
    .await
    .map(|done| done.rows_affected())
    })?;
    Ok(())
}

/// A time as JSON, as sqlx writes a `DateTime<Utc>` (read back by either
/// engine).
fn time(at: Option<DateTime<Utc>>) -> serde_json::Value {
    at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
        .into()
}

/// Writes changed sites in one statement, however many: an upsert of rows
/// that exist, each found by its key (a pass starting thousands of sites
/// is one write, not thousands).
async fn save_sites(tx: &mut Tx, id: i64, sites: &[RolloutSiteRecord]) -> sqlx::Result<()> {
    let rows = serde_json::Value::Array(
        sites
            .iter()
            .map(|s| {
                serde_json::json!([
                    s.site,
                    s.wave,
                    s.state.as_str(),
                    s.message,
                    time(s.planned_start),
                    time(s.planned_end),
                    time(s.notice_sent_at),
                    s.notice_result,
                    time(s.started_at),
                    time(s.finished_at),
                    s.preflight,
                    time(s.preflight_at),
                    s.preflight_override_by
                ])
            })
            .collect(),
    )
    .to_string();
    on_tx!(*tx, |c, d| {
        sqlx::query(d.pick(
        concat!(
            "INSERT INTO rollout_sites (rollout_id, site, wave, state, message, planned_start, planned_end, \
             notice_sent_at, notice_result, started_at, finished_at, preflight, preflight_at, preflight_override_by) \
             SELECT ?, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5, \
             j.value ->> 6, j.value ->> 7, j.value ->> 8, j.value ->> 9, j.value ->> 10, j.value ->> 11, \
             j.value ->> 12 FROM json_each(?) j WHERE TRUE ",
            sites_upserted!()
        ),
        concat!(
            "INSERT INTO rollout_sites (rollout_id, site, wave, state, message, planned_start, planned_end, \
             notice_sent_at, notice_result, started_at, finished_at, preflight, preflight_at, preflight_override_by) \
             SELECT ?, j.value ->> 0, (j.value ->> 1)::bigint, j.value ->> 2, j.value ->> 3, \
             (j.value ->> 4)::timestamptz, (j.value ->> 5)::timestamptz, (j.value ->> 6)::timestamptz, \
             j.value ->> 7, (j.value ->> 8)::timestamptz, (j.value ->> 9)::timestamptz, j.value ->> 10, \
             (j.value ->> 11)::timestamptz, j.value ->> 12 FROM json_array_elements(?::json) j ",
            sites_upserted!()
        ),
    ))
    .bind(id)
    .bind(&rows)
    .execute(c)
    .await
    .map(|_| ())
    })
}

/// What an upsert of a site's row changes: everything a pass may.
macro_rules! sites_upserted {
    () => {
        "ON CONFLICT (rollout_id, site) DO UPDATE SET state = excluded.state, message = excluded.message, \
         planned_start = excluded.planned_start, planned_end = excluded.planned_end, \
         notice_sent_at = excluded.notice_sent_at, notice_result = excluded.notice_result, \
         started_at = excluded.started_at, finished_at = excluded.finished_at, \
         preflight = excluded.preflight, preflight_at = excluded.preflight_at, \
         preflight_override_by = excluded.preflight_override_by"
    };
}
use sites_upserted;

/// Writes changed steps in one statement, however many (see
/// [`save_sites`]).
async fn save_steps(tx: &mut Tx, id: i64, steps: &[RolloutStepRecord]) -> sqlx::Result<()> {
    let rows = serde_json::Value::Array(
        steps
            .iter()
            .map(|s| {
                serde_json::json!([
                    s.site,
                    s.server_id,
                    s.module,
                    s.layer,
                    s.from_version,
                    s.to_version,
                    s.state.as_str(),
                    s.attempts,
                    time(s.next_attempt_at),
                    s.command_id,
                    s.rollback_command_id,
                    time(s.ordered_at),
                    s.message,
                    time(s.started_at),
                    time(s.finished_at),
                    s.database_decided_by
                ])
            })
            .collect(),
    )
    .to_string();
    on_tx!(*tx, |c, d| {
        sqlx::query(d.pick(
        concat!(
            "INSERT INTO rollout_steps (rollout_id, site, server_id, module, layer, from_version, to_version, \
             state, attempts, next_attempt_at, command_id, rollback_command_id, ordered_at, message, \
             started_at, finished_at, database_decided_by) \
             SELECT ?, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5, \
             j.value ->> 6, j.value ->> 7, j.value ->> 8, j.value ->> 9, j.value ->> 10, j.value ->> 11, \
             j.value ->> 12, j.value ->> 13, j.value ->> 14, j.value ->> 15 FROM json_each(?) j WHERE TRUE ",
            steps_upserted!()
        ),
        concat!(
            "INSERT INTO rollout_steps (rollout_id, site, server_id, module, layer, from_version, to_version, \
             state, attempts, next_attempt_at, command_id, rollback_command_id, ordered_at, message, \
             started_at, finished_at, database_decided_by) \
             SELECT ?, j.value ->> 0, j.value ->> 1, j.value ->> 2, (j.value ->> 3)::bigint, j.value ->> 4, \
             j.value ->> 5, j.value ->> 6, (j.value ->> 7)::bigint, (j.value ->> 8)::timestamptz, \
             j.value ->> 9, j.value ->> 10, (j.value ->> 11)::timestamptz, j.value ->> 12, \
             (j.value ->> 13)::timestamptz, (j.value ->> 14)::timestamptz, j.value ->> 15 \
             FROM json_array_elements(?::json) j ",
            steps_upserted!()
        ),
    ))
    .bind(id)
    .bind(&rows)
    .execute(c)
    .await
    .map(|_| ())
    })
}

/// What an upsert of a step's row changes: everything a pass may.
macro_rules! steps_upserted {
    () => {
        "ON CONFLICT (rollout_id, server_id, module) DO UPDATE SET state = excluded.state, \
         attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at, \
         command_id = excluded.command_id, rollback_command_id = excluded.rollback_command_id, \
         ordered_at = excluded.ordered_at, message = excluded.message, started_at = excluded.started_at, \
         finished_at = excluded.finished_at, database_decided_by = excluded.database_decided_by"
    };
}
use steps_upserted;
