//! The rollouts' REST endpoints: plan (dry run) and create, list, read, the
//! operator's actions, and the sites' maintenance windows.

use std::collections::{BTreeSet, HashMap};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiState, ErrorBody};
use crate::auth::Caller;
use crate::db::{RolloutSiteRecord, RolloutStepRecord};
use crate::rollouts::engine::Action;
use crate::rollouts::plan::{self, Estimates, Plan, Target};
use crate::rollouts::strategy::{Calendar, Schedule, Strategy};
use crate::states::{InstallState, RolloutState, SiteState, States, StepState};

/// A rollout to plan or start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRollout {
    /// The release to bring.
    pub release: String,
    /// These sites. With neither this nor `site_pattern`: every site that
    /// hosts a module of the release.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Or the sites whose name matches, `*` standing for any characters
    /// (`acme-*`).
    pub site_pattern: Option<String>,
    #[serde(default)]
    pub strategy: Strategy,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// Only compute and return the plan; nothing starts.
    #[serde(default)]
    dry_run: bool,
}

/// A started rollout and its plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    pub id: i64,
    pub plan: Plan,
}

/// Calendars of every site with a schedule.
async fn calendars(state: &ApiState) -> Result<HashMap<String, Calendar>, ApiError> {
    let mut calendars = HashMap::new();
    for s in state.fleet.db.schedules().await? {
        let windows =
            serde_json::from_str(&s.windows).map_err(|e| ApiError::Internal(e.to_string()))?;
        let calendar = Schedule {
            time_zone: s.time_zone,
            windows,
        }
        .calendar()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        calendars.insert(s.site, calendar);
    }
    Ok(calendars)
}

/// Plan a rollout (`dry_run=true`) or start it. The plan says which sites,
/// in which waves, which servers and modules from which version to which,
/// in which order and window, and the expected downtime per site.
#[utoipa::path(post, path = "/api/v1/rollouts", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "rollouts", params(CreateQuery),
    request_body = NewRollout,
    responses(
        (status = OK, description = "The plan (dry run): nothing started", body = Plan),
        (status = CREATED, description = "The rollout started", body = Created),
        (status = BAD_REQUEST, description = "Bad strategy or target, naming the field", body = ErrorBody),
        (status = NOT_FOUND, description = "No such release", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<ApiState>,
    Query(query): Query<CreateQuery>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<NewRollout>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, axum::response::Response), ApiError> {
    use axum::response::IntoResponse;
    let Json(mut new) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    new.strategy
        .validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if let Some(notice) = &new.strategy.notice {
        let refused = |e| ApiError::BadRequest(format!("strategy.notice.webhook_url: {e}"));
        let (host, port) = crate::releases::check_url(
            &notice.webhook_url,
            &state.webhook_hosts,
            "webhook hosts (--webhook-host)",
        )
        .map_err(refused)?;
        crate::releases::check_resolves_publicly(&host, port)
            .await
            .map_err(refused)?;
    }
    let mut seen = std::collections::HashSet::new();
    new.sites.retain(|s| seen.insert(s.clone()));
    let target = Target {
        sites: new.sites.clone(),
        site_pattern: new.site_pattern.clone(),
    };
    let db = &state.fleet.db;
    let release = db.release(&new.release).await?.ok_or_else(|| {
        ApiError::NotFound(format!("no release \"{}\" is published", new.release))
    })?;
    if let Some(withdrawn) = &release.withdrawn {
        return Err(ApiError::Conflict(format!(
            "release {} was withdrawn by {} at {}: {}",
            release.version, withdrawn.by, withdrawn.at, withdrawn.reason
        )));
    }
    // Agents pre-download only the newest published version of a module
    // (of the releases not withdrawn).
    for newer in db
        .releases()
        .await?
        .into_iter()
        .filter(|r| r.withdrawn.is_none())
    {
        for theirs in &newer.packages {
            let ours = release.packages.iter().find(|p| p.module == theirs.module);
            if let Some(ours) = ours
                && flotilla_proto::domain::Version::parse(&theirs.version).ok()
                    > flotilla_proto::domain::Version::parse(&ours.version).ok()
            {
                return Err(ApiError::BadRequest(format!(
                    "release: {} is not the newest release of {}: {} {} is published in release {}, and servers download only the newest; roll that release out instead",
                    release.version, ours.module, theirs.module, theirs.version, newer.version
                )));
            }
        }
    }
    let servers = db.rollout_servers(None).await?;
    let estimates = Estimates::new(
        &db.estimates().await?,
        crate::rollouts::strategy::seconds(new.strategy.default_install_seconds),
    );
    let now = Utc::now();
    let plan = plan::plan(
        &new.strategy,
        &target,
        &release,
        &servers,
        &calendars(&state).await?,
        &estimates,
        now,
    )
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if query.dry_run {
        let mut plan = plan;
        preflight(&state, &mut plan).await;
        return Ok((StatusCode::OK, Json(plan).into_response()));
    }
    let strategy =
        serde_json::to_string(&new.strategy).map_err(|e| ApiError::Internal(e.to_string()))?;
    let rows = plan.rows(strategy, &caller.name, now);
    let detail = format!(
        "release {} to {} sites in {} waves",
        release.version,
        plan.sites.len(),
        plan.waves.len()
    );
    // The engine checks that no server is in another unfinished rollout
    // and writes the rows in one transaction.
    let id = state.rollouts.create(rows, detail).await?;
    Ok((
        StatusCode::CREATED,
        Json(Created { id, plan }).into_response(),
    ))
}

/// A dry run asks every server with something to install for its
/// preflight now, all at once: problems show days before the window.
async fn preflight(state: &ApiState, plan: &mut plan::Plan) {
    use crate::rollouts::decide::preflight::summary;
    // Each server, with the modules it would install, wherever its site.
    let mut asked: Vec<(usize, String, Vec<String>)> = Vec::new();
    for (i, site) in plan.sites.iter().enumerate() {
        let mut of_site: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for step in site.steps.iter().filter(|s| s.action == "install") {
            match of_site.get(step.server.as_str()) {
                Some(&k) => asked[k].2.push(step.module.clone()),
                None => {
                    of_site.insert(step.server.as_str(), asked.len());
                    asked.push((i, step.server.clone(), vec![step.module.clone()]));
                }
            }
        }
    }
    let answers =
        futures_util::future::join_all(asked.into_iter().map(|(i, server, modules)| async move {
            let answer = state.fleet.ask_doctor(&server, Some(modules)).await;
            (i, server, answer)
        }))
        .await;
    for (i, server, answer) in answers {
        let found = match answer {
            Ok(report) => {
                let found = summary(&report, Utc::now());
                plan::PreflightAnswer {
                    server,
                    failures: found.failures,
                    warnings: found.warnings,
                }
            }
            Err(e) => plan::PreflightAnswer {
                server,
                failures: vec![format!("the preflight could not run: {e}")],
                warnings: Vec::new(),
            },
        };
        plan.sites[i].preflight.push(found);
    }
}

/// Every state a rollout, a site and a step can be in: its name, its
/// label, and what an operator may ask in it. The dashboard reads them here
/// rather than keeping a copy.
#[utoipa::path(get, path = "/api/v1/rollouts/states", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "rollouts",
    responses((status = OK, body = States)))]
pub async fn states() -> Json<States> {
    Json(States::all())
}

/// A rollout in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutSummary {
    pub id: i64,
    pub release: String,
    pub state: RolloutState,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How many sites are in each state, by name.
    pub sites: HashMap<String, usize>,
}

/// Every rollout, newest first.
#[utoipa::path(get, path = "/api/v1/rollouts", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "rollouts",
    responses((status = OK, description = "Newest first", body = [RolloutSummary])))]
pub async fn list(State(state): State<ApiState>) -> Result<Json<Vec<RolloutSummary>>, ApiError> {
    let mut out = Vec::new();
    for r in state.fleet.db.rollouts().await? {
        let mut sites = HashMap::new();
        if let Some((_, site_rows, _)) = state.fleet.db.rollout_state(r.id).await? {
            for s in site_rows {
                *sites.entry(s.state.as_str().to_owned()).or_insert(0) += 1;
            }
        }
        out.push(RolloutSummary {
            id: r.id,
            release: r.release,
            state: r.state,
            reason: r.reason,
            created_by: r.created_by,
            created_at: r.created_at,
            finished_at: r.finished_at,
            sites,
        });
    }
    Ok(Json(out))
}

/// A rollout with every site, server and module, live.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutDetail {
    pub id: i64,
    pub release: String,
    pub state: RolloutState,
    pub reason: Option<String>,
    /// Waves up to this one may start.
    pub opened_wave: i64,
    pub strategy: Strategy,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub sites: Vec<RolloutSite>,
    /// Every transition: who, when, what.
    pub log: Vec<LogLine>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutSite {
    pub site: String,
    pub wave: i64,
    pub state: SiteState,
    pub message: Option<String>,
    pub time_zone: String,
    pub planned_start: Option<DateTime<Utc>>,
    pub planned_end: Option<DateTime<Utc>>,
    pub planned_start_local: Option<String>,
    pub planned_end_local: Option<String>,
    pub notice_sent_at: Option<DateTime<Utc>>,
    pub notice_result: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Measured: the sum of its installs' time out of service.
    pub downtime_ms: i64,
    /// When its servers were last asked for their preflight.
    pub preflight_at: Option<DateTime<Utc>>,
    /// Each server's answer: the checks that would make an install fail,
    /// and the warnings.
    pub preflight: Vec<ServerPreflight>,
    /// Who let it start despite a failed preflight.
    pub preflight_override_by: Option<String>,
    pub servers: Vec<RolloutServer>,
}

/// A server's answer to a site's preflight.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerPreflight {
    pub server: String,
    pub at: DateTime<Utc>,
    /// "check subject: finding (fix: …)" of each FAIL that blocks an install.
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutServer {
    pub server: String,
    pub online: bool,
    pub steps: Vec<RolloutStep>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutStep {
    pub module: String,
    pub layer: i64,
    pub from_version: Option<String>,
    pub to_version: String,
    pub state: StepState,
    pub attempts: i64,
    pub message: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The install of the latest attempt (or the restore), as the agent reports it.
    pub install: Option<StepInstall>,
    /// The package's download on the server, while it is not there yet.
    pub download: Option<String>,
    /// Who decided to restore its database after a site rollback
    /// (`flotilla` when the strategy said so).
    pub database_decided_by: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StepInstall {
    pub install_id: String,
    pub state: InstallState,
    pub phase: Option<String>,
    pub downtime_ms: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// One rollout, live: per site, server and module, the state, phase,
/// download and measured downtime, and the log of transitions.
#[utoipa::path(get, path = "/api/v1/rollouts/{id}", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "rollouts",
    params(("id" = i64, Path, description = "The rollout")),
    responses(
        (status = OK, description = "The rollout", body = RolloutDetail),
        (status = NOT_FOUND, description = "No such rollout", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<Json<RolloutDetail>, ApiError> {
    let db = &state.fleet.db;
    let Some((rollout, sites, steps, log)) = db.rollout(id).await? else {
        return Err(ApiError::NotFound(format!("no rollout {id}")));
    };
    let installs: HashMap<String, crate::db::CommandInstall> = db
        .rollout_installs(id)
        .await?
        .into_iter()
        .map(|i| (i.command_id.clone(), i))
        .collect();
    let ids: BTreeSet<&str> = steps.iter().map(|s| s.server_id.as_str()).collect();
    let servers: HashMap<String, crate::db::ServerRecord> = db
        .servers_with_ids(&ids.into_iter().collect::<Vec<_>>())
        .await?
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let calendars = calendars(&state).await?;
    let mut strategy: Strategy =
        serde_json::from_str(&rollout.strategy).map_err(|e| ApiError::Internal(e.to_string()))?;
    // The webhook's path and query may carry a token: only its origin is shown.
    if let Some(notice) = strategy.notice.as_mut() {
        notice.webhook_url = origin(&notice.webhook_url);
    }
    let sites = sites
        .into_iter()
        .map(|site| {
            let calendar = calendars
                .get(&site.site)
                .cloned()
                .unwrap_or_else(Calendar::always);
            let steps: Vec<&RolloutStepRecord> =
                steps.iter().filter(|s| s.site == site.site).collect();
            site_detail(site, &calendar, &steps, &installs, &servers)
        })
        .collect();
    Ok(Json(RolloutDetail {
        id: rollout.id,
        release: rollout.release,
        state: rollout.state,
        reason: rollout.reason,
        opened_wave: rollout.opened_wave,
        strategy,
        created_by: rollout.created_by,
        created_at: rollout.created_at,
        finished_at: rollout.finished_at,
        sites,
        log: log
            .into_iter()
            .map(|l| LogLine {
                at: l.at,
                actor: l.actor,
                action: l.action,
                detail: l.detail,
            })
            .collect(),
    }))
}

/// A site of a rollout with its servers' steps, as the API shows it.
fn site_detail(
    site: RolloutSiteRecord,
    calendar: &Calendar,
    steps: &[&RolloutStepRecord],
    installs: &HashMap<String, crate::db::CommandInstall>,
    servers: &HashMap<String, crate::db::ServerRecord>,
) -> RolloutSite {
    let mut by_server: Vec<RolloutServer> = Vec::new();
    let mut downtime_ms = 0;
    for step in steps {
        if let Some(i) = step.command_id.as_ref().and_then(|c| installs.get(c)) {
            downtime_ms += i.downtime_ms.unwrap_or(0);
        }
        let server = servers.get(&step.server_id);
        let entry = match by_server
            .iter_mut()
            .position(|s| s.server == step.server_id)
        {
            Some(i) => &mut by_server[i],
            None => {
                by_server.push(RolloutServer {
                    server: step.server_id.clone(),
                    online: server.is_some_and(|s| s.online),
                    steps: Vec::new(),
                });
                by_server.last_mut().expect("just pushed")
            }
        };
        entry.steps.push(step_detail(step, installs, server));
    }
    let preflight = crate::rollouts::decide::preflight::answers(&site)
        .into_iter()
        .map(|(server, a)| ServerPreflight {
            server,
            at: a.at,
            failures: a.failures,
            warnings: a.warnings,
        })
        .collect();
    RolloutSite {
        preflight,
        preflight_at: site.preflight_at,
        preflight_override_by: site.preflight_override_by.clone(),
        time_zone: calendar.time_zone().name().to_owned(),
        planned_start_local: site.planned_start.map(|t| calendar.local(t)),
        planned_end_local: site.planned_end.map(|t| calendar.local(t)),
        site: site.site,
        wave: site.wave,
        state: site.state,
        message: site.message,
        planned_start: site.planned_start,
        planned_end: site.planned_end,
        notice_sent_at: site.notice_sent_at,
        notice_result: site.notice_result,
        started_at: site.started_at,
        finished_at: site.finished_at,
        downtime_ms,
        servers: by_server,
    }
}

/// A step with its latest install (or restore) and its package's download.
fn step_detail(
    step: &RolloutStepRecord,
    installs: &HashMap<String, crate::db::CommandInstall>,
    server: Option<&crate::db::ServerRecord>,
) -> RolloutStep {
    let restoring = matches!(
        step.state,
        StepState::RollingBack | StepState::RolledBack | StepState::RollbackFailed
    );
    let command = if step.rollback_command_id.is_some() && restoring {
        &step.rollback_command_id
    } else {
        &step.command_id
    };
    let install = command.as_ref().and_then(|c| installs.get(c));
    let download = server
        .and_then(|s| s.modules.iter().find(|m| m.name == step.module))
        .filter(|m| m.pending_version.as_deref() != Some(step.to_version.as_str()))
        .and_then(|m| match (&m.download_state, &m.download_detail) {
            (Some(state), Some(detail)) => Some(format!("{state}: {detail}")),
            (Some(state), None) => Some(state.clone()),
            _ => None,
        });
    RolloutStep {
        module: step.module.clone(),
        layer: step.layer,
        from_version: step.from_version.clone(),
        to_version: step.to_version.clone(),
        state: step.state,
        attempts: step.attempts,
        message: step.message.clone(),
        started_at: step.started_at,
        finished_at: step.finished_at,
        database_decided_by: step.database_decided_by.clone(),
        install: install.map(|i| StepInstall {
            install_id: i.install_id.clone(),
            state: i.state,
            phase: i.phase.clone(),
            downtime_ms: i.downtime_ms,
            started_at: i.started_at,
            finished_at: i.finished_at,
        }),
        download,
    }
}

async fn act(
    state: &ApiState,
    id: i64,
    action: Action,
    caller: &Caller,
) -> Result<Json<RolloutDetail>, ApiError> {
    state.rollouts.act(id, action, &caller.name).await?;
    get(State(state.clone()), Path(id)).await
}

/// Pause: no new site starts; sites under way finish, so no site is left
/// half updated.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/pause", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "rollouts",
    params(("id" = i64, Path, description = "The rollout")),
    responses((status = OK, body = RolloutDetail), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, description = "Not running", body = ErrorBody)))]
pub async fn pause(
    State(state): State<ApiState>,
    Path(id): Path<i64>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<RolloutDetail>, ApiError> {
    act(&state, id, Action::Pause, &caller).await
}

/// Resume a paused rollout (also past a failure threshold or a manual gate).
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/resume", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "rollouts",
    params(("id" = i64, Path, description = "The rollout")),
    responses((status = OK, body = RolloutDetail), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, description = "Not paused", body = ErrorBody)))]
pub async fn resume(
    State(state): State<ApiState>,
    Path(id): Path<i64>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<RolloutDetail>, ApiError> {
    act(&state, id, Action::Resume, &caller).await
}

/// Cancel: nothing new starts; running installs finish or roll back cleanly.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/cancel", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "rollouts",
    params(("id" = i64, Path, description = "The rollout")),
    responses((status = OK, body = RolloutDetail), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, description = "Already over", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<ApiState>,
    Path(id): Path<i64>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<RolloutDetail>, ApiError> {
    act(&state, id, Action::Cancel, &caller).await
}

/// Retry the failed (or rolled back) sites from their unfinished modules.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/retry", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "rollouts",
    params(("id" = i64, Path, description = "The rollout")),
    responses((status = OK, body = RolloutDetail), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, description = "Nothing failed", body = ErrorBody)))]
pub async fn retry(
    State(state): State<ApiState>,
    Path(id): Path<i64>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<RolloutDetail>, ApiError> {
    act(&state, id, Action::Retry, &caller).await
}

/// Leave a server out: its modules not yet started are excluded.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/servers/{server}/exclude", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "rollouts",
    params(("id" = i64, Path, description = "The rollout"), ("server" = String, Path, description = "The server id")),
    responses((status = OK, body = RolloutDetail), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, description = "Not part of it, or over", body = ErrorBody)))]
pub async fn exclude(
    State(state): State<ApiState>,
    Path((id, server)): Path<(i64, String)>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<RolloutDetail>, ApiError> {
    act(&state, id, Action::Exclude(server), &caller).await
}

/// Roll a failed, cancelled or finished site back to the versions it had.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/sites/{site}/rollback", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "rollouts",
    params(("id" = i64, Path, description = "The rollout"), ("site" = String, Path, description = "The site")),
    responses((status = OK, body = RolloutDetail), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, description = "The site is under way", body = ErrorBody)))]
pub async fn rollback_site(
    State(state): State<ApiState>,
    Path((id, site)): Path<(i64, String)>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<RolloutDetail>, ApiError> {
    act(&state, id, Action::RollbackSite(site), &caller).await
}

/// Let a site whose preflight failed start anyway: the checks that failed
/// are in the rollout's log under the caller's name.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/sites/{site}/preflight/override", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "rollouts",
    params(("id" = i64, Path, description = "The rollout"), ("site" = String, Path, description = "The site")),
    responses((status = OK, body = RolloutDetail), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, description = "Its preflight did not fail", body = ErrorBody)))]
pub async fn override_preflight(
    State(state): State<ApiState>,
    Path((id, site)): Path<(i64, String)>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<RolloutDetail>, ApiError> {
    act(&state, id, Action::OverridePreflight(site), &caller).await
}

/// What to do with the databases of a site whose rollback left them at the
/// new version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabaseDecision {
    pub choice: DatabaseChoice,
}

/// `restore`: each database goes back to the backup taken before its
/// upgrade, and what was written since is lost (the rollout log and the
/// audit trail say what). `keep`: each stays at the new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseChoice {
    Restore,
    Keep,
}

/// Decide for a rolled-back site's databases, which its rollback left at
/// the new version. Read first what a restore would discard: `GET
/// /api/v1/servers/{id}/modules/{module}/database/discard?version=` with
/// the step's `from_version`.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/sites/{site}/database", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "rollouts",
    params(("id" = i64, Path, description = "The rollout"), ("site" = String, Path, description = "The site")),
    request_body = DatabaseDecision,
    responses((status = OK, body = RolloutDetail), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, description = "The site is not waiting for a database decision", body = ErrorBody)))]
pub async fn decide_database(
    State(state): State<ApiState>,
    Path((id, site)): Path<(i64, String)>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<DatabaseDecision>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<RolloutDetail>, ApiError> {
    let Json(decision) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let restore = decision.choice == DatabaseChoice::Restore;
    act(&state, id, Action::Database { site, restore }, &caller).await
}

/// Set a site's maintenance windows, in its own time zone.
#[utoipa::path(put, path = "/api/v1/sites/{site}/schedule", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "rollouts",
    params(("site" = String, Path, description = "The site")),
    request_body = Schedule,
    responses(
        (status = OK, description = "Stored", body = Schedule),
        (status = BAD_REQUEST, description = "Names the field at fault", body = ErrorBody),
        (status = NOT_FOUND, description = "No such site", body = ErrorBody),
    ))]
pub async fn put_schedule(
    State(state): State<ApiState>,
    Path(site): Path<String>,
    body: Result<Json<Schedule>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Schedule>, ApiError> {
    let Json(schedule) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    schedule
        .calendar()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let windows =
        serde_json::to_string(&schedule.windows).map_err(|e| ApiError::Internal(e.to_string()))?;
    if !state
        .fleet
        .db
        .set_schedule(&site, &schedule.time_zone, &windows, Utc::now())
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "no site named \"{site}\" has ever connected"
        )));
    }
    state.rollouts.wake().await;
    Ok(Json(schedule))
}

/// A site's maintenance windows (none: any time, in UTC).
#[utoipa::path(get, path = "/api/v1/sites/{site}/schedule", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "rollouts",
    params(("site" = String, Path, description = "The site")),
    responses((status = OK, body = Schedule)))]
pub async fn get_schedule(
    State(state): State<ApiState>,
    Path(site): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    let found = state
        .fleet
        .db
        .schedules()
        .await?
        .into_iter()
        .find(|s| s.site == site);
    Ok(Json(match found {
        Some(s) => Schedule {
            time_zone: s.time_zone,
            windows: serde_json::from_str(&s.windows)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        },
        None => Schedule {
            time_zone: "UTC".into(),
            windows: Vec::new(),
        },
    }))
}

/// `scheme://host[:port]/…` of a URL, without its path and query.
fn origin(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}/…")
        }
        None => "…".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_webhooks_origin_is_shown() {
        assert_eq!(
            super::origin("https://user:secret@hooks.example.com:8443/t/abc123?key=s3cret"),
            "https://hooks.example.com:8443/…"
        );
    }
}
