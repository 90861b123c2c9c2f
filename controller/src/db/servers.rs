//! Servers: their connections and sessions, their inventories (modules and
//! problems), sites, and the reads of servers with their modules, problems
//! and latest installs over one scope (every server, one site, a list of
//! ids, one id), each through indexes.

use chrono::{DateTime, Utc};
use flotilla_proto::domain::{ModuleName, ModuleReport, Problem, ServerId, SiteName};
use sqlx::FromRow;

use super::installs::{InstallRecord, select_installs};
use super::{Database, Tx};

/// What an agent says about itself when it connects.
#[derive(Debug, Clone)]
pub struct ServerHello {
    pub id: ServerId,
    pub site: SiteName,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub protocol_version: u32,
    pub peer_address: Option<String>,
    /// When the agent process started, if it says.
    pub agent_started_at: Option<DateTime<Utc>>,
}

/// A change of a server's connection, for [`Database::record_presence`].
#[derive(Debug, Clone)]
pub enum Presence {
    /// It connected as `session`.
    Connected {
        hello: ServerHello,
        session: u64,
        at: DateTime<Utc>,
    },
    /// Its connection `session` ended; silent since `silent_since`.
    Offline {
        server: ServerId,
        session: u64,
        silent_since: DateTime<Utc>,
        reason: String,
    },
}

/// Records a connection: see [`Database::server_connected`].
async fn connected(
    tx: &mut Tx,
    hello: &ServerHello,
    session: u64,
    at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    on_tx!(*tx, |c, d| sqlx::query(d.sql(
        "INSERT INTO sites (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
    ))
    .bind(hello.site.as_str())
    .bind(at)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    let done = on_tx!(*tx, |c, d| {
        sqlx::query(d.sql(
        "INSERT INTO servers (id, site_id, hostname, os, agent_version, protocol_version, peer_address, online, \
                              first_seen_at, connected_at, last_seen_at, went_silent_at, offline_reason, session) \
         VALUES (?, (SELECT id FROM sites WHERE name = ?), ?, ?, ?, ?, ?, TRUE, ?, ?, ?, NULL, NULL, ?) \
         ON CONFLICT (id) DO UPDATE SET \
            site_id = excluded.site_id, hostname = excluded.hostname, os = excluded.os, \
            agent_version = excluded.agent_version, protocol_version = excluded.protocol_version, \
            peer_address = excluded.peer_address, online = TRUE, connected_at = excluded.connected_at, \
            last_seen_at = excluded.last_seen_at, went_silent_at = NULL, offline_reason = NULL, \
            session = excluded.session \
         WHERE servers.session < excluded.session",
    ))
    .bind(hello.id.as_str())
    .bind(hello.site.as_str())
    .bind(&hello.hostname)
    .bind(&hello.os)
    .bind(&hello.agent_version)
    .bind(i64::from(hello.protocol_version))
    .bind(&hello.peer_address)
    .bind(at)
    .bind(at)
    .bind(at)
    .bind(session_number(session))
    .execute(c)
    .await
    .map(|done| done.rows_affected())
    })?;
    Ok(done > 0)
}

/// Records a connection's end: see [`Database::server_offline`].
async fn offline(
    tx: &mut Tx,
    id: &ServerId,
    session: u64,
    silent_since: DateTime<Utc>,
    reason: &str,
) -> sqlx::Result<bool> {
    let done = on_tx!(*tx, |c, d| {
        sqlx::query(d.sql(
        "UPDATE servers SET online = FALSE, last_seen_at = ?, went_silent_at = ?, offline_reason = ? \
         WHERE id = ? AND session = ?",
    ))
    .bind(silent_since)
    .bind(silent_since)
    .bind(reason)
    .bind(id.as_str())
    .bind(session_number(session))
    .execute(c)
    .await
    .map(|done| done.rows_affected())
    })?;
    Ok(done > 0)
}

/// A server as stored, with its modules and problems.
#[derive(Debug, Clone)]
pub struct ServerRecord {
    pub id: String,
    pub site: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub protocol_version: i64,
    pub peer_address: Option<String>,
    pub online: bool,
    pub first_seen_at: DateTime<Utc>,
    pub connected_at: Option<DateTime<Utc>>,
    pub last_seen_at: DateTime<Utc>,
    pub went_silent_at: Option<DateTime<Utc>>,
    pub offline_reason: Option<String>,
    pub modules: Vec<ModuleRecord>,
    pub problems: Vec<Problem>,
}

/// A module as stored.
#[derive(Debug, Clone)]
pub struct ModuleRecord {
    /// A newer package waiting on the server.
    pub pending_version: Option<String>,
    /// `downloading`, `failed` or `refused`, with the version and detail.
    pub download_state: Option<String>,
    pub download_version: Option<String>,
    pub download_detail: Option<String>,
    /// The module's latest install on this server.
    pub last_install: Option<InstallRecord>,
    pub name: String,
    pub kind: String,
    pub install_path: String,
    pub installed_version: Option<String>,
    pub state: String,
    pub detail: String,
    pub updated_at: DateTime<Utc>,
}

/// A site with how many of its servers are online.
#[derive(Debug, Clone, FromRow)]
pub struct SiteRecord {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub servers: i64,
    pub online: i64,
}

#[derive(FromRow)]
struct ServerRow {
    id: String,
    site: String,
    hostname: String,
    os: String,
    agent_version: String,
    protocol_version: i64,
    peer_address: Option<String>,
    online: bool,
    first_seen_at: DateTime<Utc>,
    connected_at: Option<DateTime<Utc>>,
    last_seen_at: DateTime<Utc>,
    went_silent_at: Option<DateTime<Utc>>,
    offline_reason: Option<String>,
}

#[derive(FromRow)]
struct ModuleRow {
    pending_version: Option<String>,
    download_state: Option<String>,
    download_version: Option<String>,
    download_detail: Option<String>,
    server_id: String,
    name: String,
    kind: String,
    install_path: String,
    installed_version: Option<String>,
    state: String,
    detail: String,
    updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct ProblemRow {
    server_id: String,
    file: Option<String>,
    line: Option<i64>,
    message: String,
}

impl Database {
    /// At start-up no agent is connected yet: every server that was online
    /// when the controller stopped is marked offline since it was last seen.
    pub async fn mark_all_offline(&self, reason: &str) -> sqlx::Result<u64> {
        let done = on_pool!(self.pool, |c, d| {
            sqlx::query(d.sql(
            "UPDATE servers SET online = FALSE, went_silent_at = last_seen_at, offline_reason = ? WHERE online = TRUE",
        ))
        .bind(reason)
        .execute(c)
        .await
    .map(|done| done.rows_affected())
        })?;
        Ok(done)
    }

    /// The servers recorded online: their id, session and last-seen time.
    pub async fn online_sessions(&self) -> sqlx::Result<Vec<(ServerId, u64, DateTime<Utc>)>> {
        let rows: Vec<(String, i64, DateTime<Utc>)> = on_pool!(self.pool, |c, d| sqlx::query_as(
            d.sql("SELECT id, session, last_seen_at FROM servers WHERE online = TRUE")
        )
        .fetch_all(c)
        .await)?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, session, at)| {
                Some((ServerId::parse(&id).ok()?, u64::try_from(session).ok()?, at))
            })
            .collect())
    }

    /// The highest session number any connection was given, so that a
    /// restarted controller numbers its connections above every earlier one.
    pub async fn last_session(&self) -> sqlx::Result<u64> {
        let last: i64 = on_pool!(self.pool, |c, d| sqlx::query_scalar(
            d.sql("SELECT COALESCE(MAX(session), 0) FROM servers")
        )
        .fetch_one(c)
        .await)?;
        Ok(u64::try_from(last).unwrap_or(0))
    }

    /// Records a server that just connected as `session` (creating it and
    /// its site if new). A newer session already recorded wins: returns
    /// whether this one was.
    pub async fn server_connected(
        &self,
        hello: &ServerHello,
        session: u64,
        at: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        let connected = Presence::Connected {
            hello: hello.clone(),
            session,
            at,
        };
        Ok(self.record_presence(&[connected]).await?[0])
    }

    /// Marks a server offline, silent since `silent_since`, if `session` is
    /// still its connection; returns whether it was.
    pub async fn server_offline(
        &self,
        id: &ServerId,
        session: u64,
        silent_since: DateTime<Utc>,
        reason: &str,
    ) -> sqlx::Result<bool> {
        let offline = Presence::Offline {
            server: id.clone(),
            session,
            silent_since,
            reason: reason.to_owned(),
        };
        Ok(self.record_presence(&[offline]).await?[0])
    }

    /// Records connections and disconnections in one transaction, in
    /// order: SQLite has one writer, and a reconnection storm brings
    /// thousands at once. For each, whether it changed the server's row (a
    /// newer session already recorded wins).
    pub async fn record_presence(&self, changes: &[Presence]) -> sqlx::Result<Vec<bool>> {
        let mut tx = self.begin().await?;
        let mut changed = Vec::with_capacity(changes.len());
        for change in changes {
            changed.push(match change {
                Presence::Connected { hello, session, at } => {
                    connected(&mut tx, hello, *session, *at).await?
                }
                Presence::Offline {
                    server,
                    session,
                    silent_since,
                    reason,
                } => offline(&mut tx, server, *session, *silent_since, reason).await?,
            });
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Writes a batch of last-seen times of connected sessions, in one
    /// statement. A session's row is also put back online if anything ever
    /// marked it offline; returns the servers so repaired.
    pub async fn record_last_seen(
        &self,
        seen: &[(ServerId, u64, DateTime<Utc>)],
    ) -> sqlx::Result<Vec<String>> {
        if seen.is_empty() {
            return Ok(Vec::new());
        }
        let batch = serde_json::Value::Array(
            seen.iter()
                .map(|(id, session, at)| {
                    serde_json::json!([
                        id.as_str(),
                        session_number(*session),
                        // As sqlx writes a `DateTime<Utc>`.
                        at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
                    ])
                })
                .collect(),
        )
        .to_string();
        let mut tx = self.begin().await?;
        let repaired: Vec<String> = on_tx!(tx, |c, d| {
            sqlx::query_scalar(d.pick(
            "UPDATE servers SET online = TRUE, went_silent_at = NULL, offline_reason = NULL \
             FROM json_each(?) j \
             WHERE servers.id = j.value ->> 0 AND servers.session = j.value ->> 1 AND servers.online = FALSE \
             RETURNING servers.id",
            "UPDATE servers SET online = TRUE, went_silent_at = NULL, offline_reason = NULL \
             FROM json_array_elements(?::json) j \
             WHERE servers.id = j.value ->> 0 AND servers.session = (j.value ->> 1)::bigint \
             AND servers.online = FALSE RETURNING servers.id",
        ))
        .bind(&batch)
        .fetch_all(c)
        .await
        })?;
        on_tx!(tx, |c, d| {
            sqlx::query(d.pick(
            "UPDATE servers SET last_seen_at = j.value ->> 2 FROM json_each(?) j \
             WHERE servers.id = j.value ->> 0 AND servers.session = j.value ->> 1",
            "UPDATE servers SET last_seen_at = (j.value ->> 2)::timestamptz FROM json_array_elements(?::json) j \
             WHERE servers.id = j.value ->> 0 AND servers.session = (j.value ->> 1)::bigint",
        ))
        .bind(&batch)
        .execute(c)
        .await
    .map(|done| done.rows_affected())
        })?;
        tx.commit().await?;
        Ok(repaired)
    }

    /// Replaces everything known about a server's modules and problems.
    pub async fn replace_inventory(
        &self,
        id: &ServerId,
        modules: &[ModuleReport],
        problems: &[Problem],
        at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        on_tx!(tx, |c, d| sqlx::query(
            d.sql("DELETE FROM modules WHERE server_id = ?")
        )
        .bind(id.as_str())
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        for module in modules {
            upsert_module(&mut tx, id, module, at).await?;
        }
        replace_problems(&mut tx, id, problems).await?;
        tx.commit().await
    }

    /// Applies an inventory change: modules upserted and removed, problems replaced.
    pub async fn apply_change(
        &self,
        id: &ServerId,
        upserted: &[ModuleReport],
        removed: &[ModuleName],
        problems: &[Problem],
        at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        for name in removed {
            on_tx!(tx, |c, d| sqlx::query(
                d.sql("DELETE FROM modules WHERE server_id = ? AND name = ?")
            )
            .bind(id.as_str())
            .bind(name.as_str())
            .execute(c)
            .await
            .map(|done| done.rows_affected()))?;
        }
        for module in upserted {
            upsert_module(&mut tx, id, module, at).await?;
        }
        replace_problems(&mut tx, id, problems).await?;
        tx.commit().await
    }

    pub async fn sites(&self) -> sqlx::Result<Vec<SiteRecord>> {
        on_pool!(self.pool, |c, d| {
            sqlx::query_as(d.sql(
            "SELECT t.name, t.created_at, COUNT(s.id) AS servers, \
                    COALESCE(SUM(CASE WHEN s.online THEN 1 ELSE 0 END), 0) AS online \
             FROM sites t LEFT JOIN servers s ON s.site_id = t.id GROUP BY t.id, t.name, t.created_at ORDER BY t.name",
        ))
        .fetch_all(c)
        .await
        })
    }

    /// Every server (of one site, if given), with modules and problems, by site then id.
    pub async fn servers(&self, site: Option<&str>) -> sqlx::Result<Vec<ServerRecord>> {
        match site {
            Some(site) => self.read_servers(&SITE, Some(site), true).await,
            None => self.read_servers(&EVERY, None, true).await,
        }
    }

    /// The servers with these ids, with modules and problems, by site then id.
    pub async fn servers_with_ids(&self, ids: &[&str]) -> sqlx::Result<Vec<ServerRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::Value::from(ids).to_string();
        self.read_servers(&IDS, Some(&ids), true).await
    }

    /// The servers a rollout is planned or decided over (every one, or
    /// those with these ids), with modules and problems but not their
    /// latest installs, which neither reads: at 10,000 servers that read is
    /// a good part of a pass.
    pub async fn rollout_servers(&self, ids: Option<&[&str]>) -> sqlx::Result<Vec<ServerRecord>> {
        match ids {
            None => self.read_servers(&EVERY, None, false).await,
            Some([]) => Ok(Vec::new()),
            Some(ids) => {
                let ids = serde_json::Value::from(ids).to_string();
                self.read_servers(&IDS, Some(&ids), false).await
            }
        }
    }

    pub async fn server(&self, id: &str) -> sqlx::Result<Option<ServerRecord>> {
        Ok(self.read_servers(&ONE, Some(id), true).await?.pop())
    }

    /// Runs the reads of `reads` in one snapshot (the latest installs' only
    /// `with_installs`), each with `parameter` bound if given, and puts
    /// each server together.
    pub(super) async fn read_servers(
        &self,
        reads: &ServerReads,
        parameter: Option<&str>,
        with_installs: bool,
    ) -> sqlx::Result<Vec<ServerRecord>> {
        let mut conn = self.snapshot().await?;
        let rows: Vec<ServerRow> = read(&mut conn, reads.servers, parameter).await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let modules: Vec<ModuleRow> = read(&mut conn, reads.modules, parameter).await?;
        let problems: Vec<ProblemRow> = read(&mut conn, reads.problems, parameter).await?;
        let installs: Vec<InstallRecord> = match with_installs {
            true => read(&mut conn, reads.installs, parameter).await?,
            false => Vec::new(),
        };
        conn.commit().await?;
        Ok(assemble(rows, modules, problems, installs))
    }
}

/// The statements that read servers with their modules, problems and
/// latest installs, over one set of servers.
pub(super) struct ServerReads {
    pub(super) servers: &'static str,
    pub(super) modules: &'static str,
    pub(super) problems: &'static str,
    pub(super) installs: &'static str,
}

/// [`ServerReads`] over the servers that `$servers` (a `WHERE` clause on
/// `servers s` joined with `sites t`) and `$ids` (a condition on a
/// `server_id` column) select, each with at most one parameter.
macro_rules! server_reads {
    ($servers:literal, $ids:literal) => {
        ServerReads {
            servers: concat!(
                "SELECT s.id, t.name AS site, s.hostname, s.os, s.agent_version, s.protocol_version, ",
                "s.peer_address, s.online, s.first_seen_at, s.connected_at, s.last_seen_at, s.went_silent_at, ",
                "s.offline_reason FROM servers s JOIN sites t ON t.id = s.site_id ",
                $servers,
                " ORDER BY t.name, s.id"
            ),
            modules: concat!(
                "SELECT server_id, name, kind, install_path, installed_version, state, detail, updated_at, ",
                "pending_version, download_state, download_version, download_detail FROM modules WHERE ",
                $ids,
                " ORDER BY server_id, name"
            ),
            problems: concat!(
                "SELECT server_id, file, line, message FROM server_problems WHERE ",
                $ids,
                " ORDER BY server_id, position"
            ),
            installs: select_installs!(
                "WHERE ",
                $ids,
                " AND i.started_at = (SELECT MAX(j.started_at) FROM installs j ",
                "WHERE j.server_id = i.server_id AND j.module = i.module)"
            ),
        }
    };
}

/// Every server; no parameter.
const EVERY: ServerReads = server_reads!("", "TRUE");
/// The servers of the site named `?`, through `servers_by_site`.
pub(super) const SITE: ServerReads = server_reads!(
    "WHERE t.name = ?",
    "server_id IN (SELECT s.id FROM servers s JOIN sites t ON t.id = s.site_id WHERE t.name = ?)"
);
/// The servers whose ids are in the JSON array `?`.
pub(super) const IDS: ServerReads = server_reads!(
    "WHERE s.id IN (SELECT value FROM json_each(?))",
    "server_id IN (SELECT value FROM json_each(?))"
);
/// The server whose id is `?`.
pub(super) const ONE: ServerReads = server_reads!("WHERE s.id = ?", "server_id = ?");

/// The rows `sql` selects inside `tx`, with `parameter` bound if there is one.
async fn read<T>(tx: &mut Tx, sql: &'static str, parameter: Option<&str>) -> sqlx::Result<Vec<T>>
where
    T: Send + Unpin,
    T: for<'r> FromRow<'r, sqlx::sqlite::SqliteRow> + for<'r> FromRow<'r, sqlx::postgres::PgRow>,
{
    on_tx!(*tx, |c, d| {
        let query = sqlx::query_as(d.sql(sql));
        match parameter {
            Some(parameter) => query.bind(parameter),
            None => query,
        }
        .fetch_all(c)
        .await
    })
}

/// A session number as stored (SQLite integers are signed).
fn session_number(session: u64) -> i64 {
    i64::try_from(session).unwrap_or(i64::MAX)
}

async fn upsert_module(
    tx: &mut Tx,
    id: &ServerId,
    module: &ModuleReport,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    on_tx!(*tx, |c, d| {
        sqlx::query(d.sql(
        "INSERT INTO modules (server_id, name, kind, install_path, installed_version, state, detail, updated_at, \
                              pending_version, download_state, download_version, download_detail) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (server_id, name) DO UPDATE SET kind = excluded.kind, install_path = excluded.install_path, \
            installed_version = excluded.installed_version, state = excluded.state, detail = excluded.detail, \
            updated_at = excluded.updated_at, pending_version = excluded.pending_version, \
            download_state = excluded.download_state, download_version = excluded.download_version, \
            download_detail = excluded.download_detail",
    ))
    .bind(id.as_str())
    .bind(module.name.as_str())
    .bind(module.kind.as_str())
    .bind(&module.install_path)
    .bind(module.installed_version.as_ref().map(|v| v.to_string()))
    .bind(module.state.as_str())
    .bind(&module.detail)
    .bind(at)
    .bind(module.pending_version.as_ref().map(|v| v.to_string()))
    .bind(module.download.as_ref().map(|d| d.state.clone()))
    .bind(module.download.as_ref().map(|d| d.version.clone()))
    .bind(module.download.as_ref().map(|d| d.detail.clone()))
    .execute(c)
    .await
    .map(|done| done.rows_affected())
    })?;
    Ok(())
}

async fn replace_problems(tx: &mut Tx, id: &ServerId, problems: &[Problem]) -> sqlx::Result<()> {
    on_tx!(*tx, |c, d| sqlx::query(
        d.sql("DELETE FROM server_problems WHERE server_id = ?")
    )
    .bind(id.as_str())
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    for (position, problem) in problems.iter().enumerate() {
        on_tx!(*tx, |c, d| {
            sqlx::query(d.sql(
            "INSERT INTO server_problems (server_id, position, file, line, message) VALUES (?, ?, ?, ?, ?)"
        ))
        .bind(id.as_str())
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(&problem.file)
        .bind(problem.line.map(i64::from))
        .bind(&problem.message)
        .execute(c)
        .await
    .map(|done| done.rows_affected())
        })?;
    }
    Ok(())
}

fn assemble(
    rows: Vec<ServerRow>,
    modules: Vec<ModuleRow>,
    problems: Vec<ProblemRow>,
    installs: Vec<InstallRecord>,
) -> Vec<ServerRecord> {
    let mut servers: Vec<ServerRecord> = rows
        .into_iter()
        .map(|row| ServerRecord {
            id: row.id,
            site: row.site,
            hostname: row.hostname,
            os: row.os,
            agent_version: row.agent_version,
            protocol_version: row.protocol_version,
            peer_address: row.peer_address,
            online: row.online,
            first_seen_at: row.first_seen_at,
            connected_at: row.connected_at,
            last_seen_at: row.last_seen_at,
            went_silent_at: row.went_silent_at,
            offline_reason: row.offline_reason,
            modules: Vec::new(),
            problems: Vec::new(),
        })
        .collect();
    let index: std::collections::HashMap<String, usize> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    for module in modules {
        if let Some(&i) = index.get(&module.server_id) {
            servers[i].modules.push(ModuleRecord {
                name: module.name,
                kind: module.kind,
                install_path: module.install_path,
                installed_version: module.installed_version,
                state: module.state,
                detail: module.detail,
                updated_at: module.updated_at,
                pending_version: module.pending_version,
                download_state: module.download_state,
                download_version: module.download_version,
                download_detail: module.download_detail,
                last_install: None,
            });
        }
    }
    for install in installs {
        if let Some(&i) = index.get(&install.server_id)
            && let Some(module) = servers[i]
                .modules
                .iter_mut()
                .find(|m| m.name == install.module)
        {
            module.last_install = Some(install);
        }
    }
    for problem in problems {
        if let Some(&i) = index.get(&problem.server_id) {
            servers[i].problems.push(Problem {
                file: problem.file,
                line: problem.line.and_then(|l| u32::try_from(l).ok()),
                message: problem.message,
            });
        }
    }
    servers
}
