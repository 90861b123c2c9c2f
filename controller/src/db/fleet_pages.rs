//! The fleet a page at a time, filtered in SQL (never after loading the
//! fleet), and the aggregates the dashboard shows at the top: counts by
//! state and each module's versions across the fleet.

use super::Database;
use super::servers::{IDS, ServerRecord};

/// What to list of the fleet; every part optional.
#[derive(Debug, Clone, Default)]
pub struct ServerFilter {
    pub site: Option<String>,
    /// Servers hosting this module…
    pub module: Option<String>,
    /// …at this installed version (with `module`: of that module).
    pub version: Option<String>,
    pub state: Option<ServerState>,
    /// Only servers with (`true`) or without problems.
    pub problems: Option<bool>,
    /// A part of the server's id, host name or site.
    pub search: Option<String>,
}

/// A server's state, as the fleet list filters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Online,
    Offline,
    /// A module shows its maintenance page.
    Maintenance,
    /// A module's latest install failed.
    Failed,
    /// A module has a newer package waiting.
    UpdateAvailable,
}

/// Where a page ends: the last server's site and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub site: String,
    pub id: String,
}

/// The fleet's counts, for the dashboard's top.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct FleetCounts {
    pub sites: i64,
    pub servers: i64,
    pub online: i64,
    pub offline: i64,
    pub maintenance: i64,
    pub failed: i64,
    pub update_available: i64,
    pub problems: i64,
}

/// How many servers run a version of a module.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VersionCount {
    pub module: String,
    /// `None`: the version could not be read.
    pub version: Option<String>,
    pub servers: i64,
}

/// The condition each state is, on `servers s`.
fn state_condition(state: ServerState) -> &'static str {
    match state {
        ServerState::Online => "s.online = TRUE",
        ServerState::Offline => "s.online = FALSE",
        ServerState::Maintenance => {
            "EXISTS (SELECT 1 FROM modules m WHERE m.server_id = s.id AND m.state = 'maintenance')"
        }
        ServerState::Failed => {
            "EXISTS (SELECT 1 FROM modules m JOIN installs i ON i.server_id = m.server_id AND i.module = m.name \
             WHERE m.server_id = s.id AND i.state = 'failed' AND i.started_at = \
             (SELECT MAX(j.started_at) FROM installs j WHERE j.server_id = m.server_id AND j.module = m.name))"
        }
        ServerState::UpdateAvailable => {
            "EXISTS (SELECT 1 FROM modules m WHERE m.server_id = s.id AND m.pending_version IS NOT NULL)"
        }
    }
}

/// A statement built from a filter: its text, with `?` for each of
/// `binds`, all text.
#[derive(Default)]
struct Built {
    sql: String,
    binds: Vec<String>,
}

impl Built {
    fn new(sql: &str) -> Self {
        Built {
            sql: sql.to_owned(),
            binds: Vec::new(),
        }
    }

    fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    fn push_bind(&mut self, value: &str) -> &mut Self {
        self.sql.push('?');
        self.binds.push(value.to_owned());
        self
    }
}

/// `WHERE …` for `filter` (and the keyset `after`), on `servers s JOIN sites t`.
fn push_filter(query: &mut Built, filter: &ServerFilter, after: Option<&Cursor>) {
    query.push(" WHERE 1 = 1");
    if let Some(site) = &filter.site {
        query.push(" AND t.name = ").push_bind(site);
    }
    match (&filter.module, &filter.version) {
        (Some(module), Some(version)) => {
            query
                .push(" AND EXISTS (SELECT 1 FROM modules m WHERE m.server_id = s.id AND m.name = ")
                .push_bind(module)
                .push(" AND m.installed_version = ")
                .push_bind(version)
                .push(")");
        }
        (Some(module), None) => {
            query
                .push(" AND EXISTS (SELECT 1 FROM modules m WHERE m.server_id = s.id AND m.name = ")
                .push_bind(module)
                .push(")");
        }
        (None, Some(version)) => {
            query
                .push(" AND EXISTS (SELECT 1 FROM modules m WHERE m.server_id = s.id AND m.installed_version = ")
                .push_bind(version)
                .push(")");
        }
        (None, None) => {}
    }
    if let Some(state) = filter.state {
        query.push(" AND ").push(state_condition(state));
    }
    match filter.problems {
        Some(true) => {
            query.push(" AND EXISTS (SELECT 1 FROM server_problems p WHERE p.server_id = s.id)");
        }
        Some(false) => {
            query
                .push(" AND NOT EXISTS (SELECT 1 FROM server_problems p WHERE p.server_id = s.id)");
        }
        None => {}
    }
    if let Some(search) = &filter.search {
        query
            .push(" AND (instr(lower(s.id), lower(")
            .push_bind(search)
            .push(")) > 0 OR instr(lower(s.hostname), lower(")
            .push_bind(search)
            .push(")) > 0 OR instr(lower(t.name), lower(")
            .push_bind(search)
            .push(")) > 0)");
    }
    if let Some(after) = after {
        query
            .push(" AND (t.name, s.id) > (")
            .push_bind(&after.site)
            .push(", ")
            .push_bind(&after.id)
            .push(")");
    }
}

impl Database {
    /// A page of the servers `filter` selects, by site then id, after
    /// `after`; with the cursor of the next page when there is one.
    pub async fn servers_page(
        &self,
        filter: &ServerFilter,
        after: Option<&Cursor>,
        limit: u32,
    ) -> sqlx::Result<(Vec<ServerRecord>, Option<Cursor>)> {
        let mut query = Built::new(
            "SELECT t.name AS site, s.id FROM servers s JOIN sites t ON t.id = s.site_id",
        );
        push_filter(&mut query, filter, after);
        // A number, not text: written in the statement.
        query.push(&format!(
            " ORDER BY t.name, s.id LIMIT {}",
            u64::from(limit) + 1
        ));
        let mut keys: Vec<(String, String)> = on_pool!(self.pool, |c, d| {
            let mut statement = sqlx::query_as(d.owned(query.sql.clone()));
            for value in &query.binds {
                statement = statement.bind(value);
            }
            statement.fetch_all(c).await
        })?;
        let more = keys.len() > limit as usize;
        keys.truncate(limit as usize);
        let next = more
            .then(|| keys.last().cloned())
            .flatten()
            .map(|(site, id)| Cursor { site, id });
        if keys.is_empty() {
            return Ok((Vec::new(), None));
        }
        let ids =
            serde_json::Value::from(keys.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>())
                .to_string();
        let servers = self.read_servers(&IDS, Some(&ids), true).await?;
        Ok((servers, next))
    }

    /// How many servers `filter` selects.
    pub async fn count_servers(&self, filter: &ServerFilter) -> sqlx::Result<i64> {
        let mut query =
            Built::new("SELECT COUNT(*) FROM servers s JOIN sites t ON t.id = s.site_id");
        push_filter(&mut query, filter, None);
        on_pool!(self.pool, |c, d| {
            let mut statement = sqlx::query_scalar(d.owned(query.sql.clone()));
            for value in &query.binds {
                statement = statement.bind(value);
            }
            statement.fetch_one(c).await
        })
    }

    /// The fleet's counts by state: each one aggregate over its table,
    /// not a test per server.
    pub async fn fleet_counts(&self) -> sqlx::Result<FleetCounts> {
        on_pool!(self.pool, |c, d| {
            sqlx::query_as(d.sql(
            "SELECT (SELECT COUNT(*) FROM sites) AS sites, \
                    (SELECT COUNT(*) FROM servers) AS servers, \
                    (SELECT COUNT(*) FROM servers WHERE online = TRUE) AS online, \
                    (SELECT COUNT(*) FROM servers WHERE online = FALSE) AS offline, \
                    (SELECT COUNT(DISTINCT server_id) FROM modules WHERE state = 'maintenance') AS maintenance, \
                    (SELECT COUNT(DISTINCT i.server_id) FROM installs i WHERE i.state = 'failed' AND i.started_at = \
                        (SELECT MAX(j.started_at) FROM installs j WHERE j.server_id = i.server_id AND j.module = i.module)) \
                     AS failed, \
                    (SELECT COUNT(DISTINCT server_id) FROM modules WHERE pending_version IS NOT NULL) AS update_available, \
                    (SELECT COUNT(DISTINCT server_id) FROM server_problems) AS problems",
        ))
        .fetch_one(c)
        .await
        })
    }

    /// Each module's installed versions across the fleet, with how many
    /// servers run each, by module then version.
    pub async fn version_counts(&self) -> sqlx::Result<Vec<VersionCount>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(
            "SELECT name AS module, installed_version AS version, COUNT(*) AS servers \
             FROM modules GROUP BY name, installed_version \
             ORDER BY name, installed_version IS NOT NULL, installed_version",
        ))
        .fetch_all(c)
        .await)
    }
}
