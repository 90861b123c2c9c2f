//! The fleet's rows against a real SQLite file: a connection's state cannot
//! be overwritten by an older connection's, and one site's servers are read
//! from that site's rows only, through indexes.

#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use flotilla_proto::domain::{
    ModuleKind, ModuleName, ModuleReport, ModuleState, Problem, ServerId, SiteName, Version,
};

use super::servers::{IDS, ONE, SITE, ServerReads};
use super::{Database, ServerHello};

pub(super) async fn database(dir: &tempfile::TempDir) -> Database {
    Database::open(&dir.path().join("controller.db"))
        .await
        .unwrap()
}

fn hello(site: &str, id: &str) -> ServerHello {
    ServerHello {
        id: ServerId::parse(id).unwrap(),
        site: SiteName::parse(site).unwrap(),
        hostname: id.to_owned(),
        os: "linux".to_owned(),
        agent_version: "1.0.0".to_owned(),
        protocol_version: 1,
        peer_address: None,
        agent_started_at: None,
    }
}

fn module(name: &str, version: &str) -> ModuleReport {
    ModuleReport {
        name: ModuleName::parse(name).unwrap(),
        kind: ModuleKind::Web,
        install_path: format!("/srv/{name}"),
        installed_version: Some(Version::parse(version).unwrap()),
        state: ModuleState::Installed,
        detail: String::new(),
        pending_version: None,
        download: None,
    }
}

async fn online(db: &Database, id: &str) -> bool {
    db.server(id).await.unwrap().unwrap().online
}

#[tokio::test]
async fn an_older_connection_cannot_overwrite_a_newer_ones_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let web = hello("acme-paris", "acme-web-01");
    let id = web.id.clone();
    let now = Utc::now();

    assert!(db.server_connected(&web, 2, now).await.unwrap());
    // Connection 1's hello committing late changes nothing.
    assert!(!db.server_connected(&web, 1, now).await.unwrap());
    assert_eq!(db.last_session().await.unwrap(), 2);
    // Connection 1 ending does not take connection 2 offline.
    assert!(!db.server_offline(&id, 1, now, "old stream").await.unwrap());
    assert!(online(&db, id.as_str()).await);
    // Nor do its heartbeats count.
    let later = now + Duration::seconds(5);
    assert!(
        db.record_last_seen(&[(id.clone(), 1, later)])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        db.server(id.as_str()).await.unwrap().unwrap().last_seen_at,
        now
    );

    // Connection 2 ending does.
    assert!(
        db.server_offline(&id, 2, now, "agent closed")
            .await
            .unwrap()
    );
    assert!(!online(&db, id.as_str()).await);
    // Were the current connection recorded offline, its next heartbeat flush
    // puts it back online and says so.
    assert_eq!(
        db.record_last_seen(&[(id.clone(), 2, later)])
            .await
            .unwrap(),
        vec![id.as_str().to_owned()]
    );
    let server = db.server(id.as_str()).await.unwrap().unwrap();
    assert!(server.online && server.went_silent_at.is_none() && server.offline_reason.is_none());
    assert_eq!(server.last_seen_at, later);
    // A flush of a server already online repairs nothing.
    assert!(
        db.record_last_seen(&[(id, 2, later)])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn one_sites_servers_are_read_alone_with_their_modules_and_problems() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let now = Utc::now();
    for (n, (site, id)) in [
        ("acme-paris", "acme-web-01"),
        ("acme-paris", "acme-app-01"),
        ("globex-lyon", "globex-web-01"),
    ]
    .into_iter()
    .enumerate()
    {
        let hello = hello(site, id);
        db.server_connected(&hello, n as u64 + 1, now)
            .await
            .unwrap();
        let problem = Problem {
            file: Some("applicationspath.config".to_owned()),
            line: Some(3),
            message: format!("a problem on {id}"),
        };
        db.replace_inventory(&hello.id, &[module("ecommerce", "5.8.0")], &[problem], now)
            .await
            .unwrap();
    }

    let paris = db.servers(Some("acme-paris")).await.unwrap();
    let ids: Vec<&str> = paris.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["acme-app-01", "acme-web-01"]);
    for server in &paris {
        assert_eq!(server.modules.len(), 1, "{}", server.id);
        assert_eq!(server.problems.len(), 1, "{}", server.id);
        assert!(server.problems[0].message.ends_with(&server.id));
    }
    assert!(db.servers(Some("no-such-site")).await.unwrap().is_empty());
    assert_eq!(db.servers(None).await.unwrap().len(), 3);
    let chosen = db
        .servers_with_ids(&["globex-web-01", "acme-web-01", "unknown"])
        .await
        .unwrap();
    let ids: Vec<&str> = chosen.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["acme-web-01", "globex-web-01"]);
    assert_eq!(chosen[1].modules.len(), 1);
}

/// The query plan's lines for `sql`, its one parameter bound.
async fn plan(db: &Database, sql: &str) -> Vec<String> {
    use sqlx::Row;
    sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
        .bind("acme-paris")
        .fetch_all(db.sqlite())
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>("detail"))
        .collect()
}

#[tokio::test]
async fn reads_of_some_servers_search_indexes_and_scan_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let scoped: [(&str, &ServerReads); 3] = [("site", &SITE), ("ids", &IDS), ("one", &ONE)];
    for (name, reads) in scoped {
        for sql in [reads.servers, reads.modules, reads.problems, reads.installs] {
            let explained = plan(&db, sql).await;
            assert!(!explained.is_empty(), "{name}: no plan for {sql}");
            // json_each is the list of ids itself.
            let scans: Vec<&String> = explained
                .iter()
                .filter(|line| line.starts_with("SCAN") && !line.contains("json_each"))
                .collect();
            assert!(
                scans.is_empty(),
                "{name}: {sql}\nscans {scans:?}\nplan {explained:?}"
            );
        }
    }
}

#[tokio::test]
async fn estimates_of_some_modules_are_the_same_as_from_every_install() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let web = hello("acme-paris", "acme-web-01");
    db.server_connected(&web, 1, Utc::now()).await.unwrap();
    let start = Utc::now() - Duration::hours(1);
    for n in 0..30i64 {
        for (module, seconds) in [("ecommerce", 10 + n), ("phygitalapi", 100 + n)] {
            let started_at = start + Duration::seconds(n * 60);
            let result = flotilla_proto::link::InstallResult {
                install_id: format!("{module}-{n}"),
                module: module.to_owned(),
                from_version: None,
                to_version: "5.9.0".to_owned(),
                // Restores of a rollout do not count.
                command_id: (n == 29).then(|| format!("rollout-1-rollback-{module}")),
                ok: n % 5 != 0,
                downtime_ms: 42,
                message: String::new(),
                phase: None,
                hook_output: Vec::new(),
                rolled_back: false,
                rollback_error: None,
                warnings: Vec::new(),
                started_at,
                finished_at: started_at + Duration::seconds(seconds),
            };
            db.install_result(&web.id, &result).await.unwrap();
        }
    }
    let of = db.estimates_of(&["ecommerce"]).await.unwrap();
    let mut every: Vec<i64> = db
        .estimates()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.module == "ecommerce")
        .map(|e| e.duration_ms)
        .collect();
    let mut some: Vec<i64> = of.iter().map(|e| e.duration_ms).collect();
    every.sort_unstable();
    some.sort_unstable();
    assert_eq!(some, every);
    // 23 successes (29 is a restore; 0, 5, … 25 failed): the 20 newest, back to 4.
    assert_eq!(some.len(), 20);
    // Durations come from julianday arithmetic: to the millisecond, give or take one.
    assert!((some[0] - 14_000).abs() <= 1, "{some:?}");
    assert!(
        of.iter()
            .all(|e| e.module == "ecommerce" && e.downtime_ms == 42)
    );
}

#[tokio::test]
async fn a_token_is_valid_until_it_expires_or_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let now = Utc::now();
    let expires = now + Duration::days(1);
    assert!(
        db.create_token("ci", "publisher", "hash-of-ci", "admin", now, Some(expires))
            .await
            .unwrap()
    );
    assert!(
        !db.create_token("ci", "admin", "another", "admin", now, None)
            .await
            .unwrap(),
        "a name is taken once"
    );
    let bearer = db.token_bearer("hash-of-ci", now).await.unwrap().unwrap();
    assert_eq!(
        (bearer.name.as_str(), bearer.role.as_str()),
        ("ci", "publisher")
    );
    assert!(bearer.csrf.is_none());
    assert!(
        db.token_bearer("hash-of-ci", expires + Duration::seconds(1))
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    assert!(db.token_bearer("unknown", now).await.unwrap().is_none());
    assert!(db.revoke_token("ci", now).await.unwrap());
    assert!(
        db.token_bearer("hash-of-ci", now).await.unwrap().is_none(),
        "revoked"
    );
    let listed = db.tokens().await.unwrap();
    assert!(listed[0].revoked_at.is_some() && listed[0].last_used_at.is_some());
}

/// Enrolls with `hash` at `at`, issuing a certificate with a fresh serial.
pub(super) async fn enroll_at(
    db: &Database,
    hash: &str,
    at: chrono::DateTime<Utc>,
) -> Result<String, super::TokenRefusal> {
    let serial = flotilla_proto::web::random_secret();
    db.enroll(hash, "192.0.2.1:4000", at, |server, site| {
        Ok::<_, String>((
            format!("{server}@{site}"),
            serial.clone(),
            at + Duration::days(30),
        ))
    })
    .await
    .unwrap()
    .map(|issued| issued.unwrap())
}

#[tokio::test]
async fn an_enrollment_token_is_taken_once_and_only_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let now = Utc::now();
    db.create_enrollment(
        "h1",
        "web-01",
        "acme",
        "admin",
        now,
        now + Duration::hours(1),
    )
    .await
    .unwrap();
    db.create_enrollment(
        "h2",
        "web-02",
        "acme",
        "admin",
        now,
        now + Duration::hours(1),
    )
    .await
    .unwrap();

    assert_eq!(
        enroll_at(&db, "unknown", now).await,
        Err(super::TokenRefusal::Unknown)
    );
    // After its expiry, refused, and still unused.
    let later = now + Duration::hours(2);
    assert_eq!(
        enroll_at(&db, "h1", later).await,
        Err(super::TokenRefusal::Expired(now + Duration::hours(1)))
    );
    // Two agents racing for one token: exactly one gets it.
    let (a, b) = tokio::join!(enroll_at(&db, "h2", now), enroll_at(&db, "h2", now));
    assert_eq!(
        [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{a:?} {b:?}"
    );
    assert_eq!(a.or(b).unwrap(), "web-02@acme");
    assert_eq!(
        enroll_at(&db, "h2", now).await,
        Err(super::TokenRefusal::Used(now))
    );
    // A certificate that cannot be issued leaves the token usable.
    let failed = db
        .enroll("h1", "x", now, |_, _| {
            Err::<(String, String, _), _>("bad csr")
        })
        .await
        .unwrap();
    assert!(matches!(failed, Ok(Err("bad csr"))), "{failed:?}");
    assert_eq!(enroll_at(&db, "h1", now).await.unwrap(), "web-01@acme");

    // Revoking a server revokes its certificates, and a new enrollment
    // lifts the server's revocation but not its old certificates'.
    db.revoke_server("web-01", None, "admin", now)
        .await
        .unwrap();
    let revoked = db.revocations().await.unwrap();
    assert!(revoked.servers.contains("web-01"));
    let old = db.certificates_of("web-01").await.unwrap();
    assert!(old.iter().all(|c| revoked.serials.contains(&c.serial)));
    db.create_enrollment(
        "h3",
        "web-01",
        "acme",
        "admin",
        now,
        now + Duration::hours(1),
    )
    .await
    .unwrap();
    enroll_at(&db, "h3", now).await.unwrap();
    let revoked = db.revocations().await.unwrap();
    assert!(!revoked.servers.contains("web-01"));
    assert!(old.iter().all(|c| revoked.serials.contains(&c.serial)));
    assert_eq!(db.certificates_of("web-01").await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_token_is_checked_with_a_read_and_its_use_noted_to_the_minute() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let now = Utc::now();
    assert!(
        db.create_token(
            "pipeline",
            "publisher",
            "h",
            "admin",
            now,
            Some(now + Duration::days(1))
        )
        .await
        .unwrap()
    );
    let last_used = async || db.tokens().await.unwrap()[0].last_used_at;
    assert_eq!(
        db.token_bearer("h", now).await.unwrap().unwrap().name,
        "pipeline"
    );
    assert_eq!(last_used().await, Some(now));
    // Within the minute: no write.
    db.token_bearer("h", now + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last_used().await, Some(now));
    db.token_bearer("h", now + Duration::seconds(61))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last_used().await, Some(now + Duration::seconds(61)));
    // Unknown, expired and revoked tokens stand for nobody.
    assert!(db.token_bearer("other", now).await.unwrap().is_none());
    assert!(
        db.token_bearer("h", now + Duration::days(2))
            .await
            .unwrap()
            .is_none()
    );
    db.revoke_token("pipeline", now).await.unwrap();
    assert!(
        db.token_bearer("h", now + Duration::seconds(90))
            .await
            .unwrap()
            .is_none()
    );
}

/// A rollout with a site and a step, in the given states.
async fn insert_rollout(
    pool: &sqlx::SqlitePool,
    rollout: &str,
    site: &str,
    step: &str,
) -> sqlx::Result<()> {
    sqlx::query("INSERT OR IGNORE INTO releases (version, notes, created_at) VALUES ('2.0.0', '', '2026-12-01T00:00:00Z')")
        .execute(pool)
        .await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO rollouts (release, strategy, state, created_by, created_at) \
         VALUES ('2.0.0', '{}', ?, 'ops', '2026-12-01T00:00:00Z') RETURNING id",
    )
    .bind(rollout)
    .fetch_one(pool)
    .await?;
    sqlx::query(
        "INSERT INTO rollout_sites (rollout_id, site, wave, state) VALUES (?, 'acme', 1, ?)",
    )
    .bind(id)
    .bind(site)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO rollout_steps (rollout_id, site, server_id, module, layer, to_version, state) \
         VALUES (?, 'acme', 'acme-web', 'ecommerce', 0, '2.0.0', ?)",
    )
    .bind(id)
    .bind(step)
    .execute(pool)
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_schema_refuses_a_state_that_does_not_exist_and_keeps_the_rollouts_it_had() {
    use crate::states::{RolloutState, SiteState, StepState};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controller.db");
    // A database from before states were checked, with a rollout under way.
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        super::MIGRATOR.run_to(20261201000010, &pool).await.unwrap();
        insert_rollout(&pool, "running", "rolling_back", "rollback_failed")
            .await
            .unwrap();
        pool.close().await;
    }
    let db = Database::open(&path).await.unwrap();
    let (rollout, sites, steps) = db.rollout_state(1).await.unwrap().unwrap();
    assert_eq!(rollout.state, RolloutState::Running);
    assert_eq!(sites[0].state, SiteState::RollingBack);
    assert_eq!(steps[0].state, StepState::RollbackFailed);

    // Every state the controller knows is stored; any other is refused.
    for (i, state) in StepState::ALL.iter().enumerate() {
        let rollout = RolloutState::ALL[i % RolloutState::ALL.len()];
        let site = SiteState::ALL[i % SiteState::ALL.len()];
        insert_rollout(db.sqlite(), rollout.as_str(), site.as_str(), state.as_str())
            .await
            .unwrap();
    }
    for (rollout, site, step) in [
        ("finished", "waiting", "pending"),
        ("running", "done", "pending"),
        ("running", "waiting", "installing"),
    ] {
        let e = insert_rollout(db.sqlite(), rollout, site, step)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("CHECK constraint failed"),
            "{rollout}/{site}/{step}: {e}"
        );
    }
    // The rebuilt tables still cascade and still check their references.
    let orphan = sqlx::query(
        "INSERT INTO rollout_steps (rollout_id, site, server_id, module, layer, to_version, state) \
         VALUES (999, 'nowhere', 'x', 'y', 0, '1.0.0', 'pending')",
    )
    .execute(db.sqlite())
    .await;
    assert!(orphan.is_err(), "a step of no site is refused");
    sqlx::query("DELETE FROM rollouts WHERE id = 1")
        .execute(db.sqlite())
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rollout_steps WHERE rollout_id = 1")
        .fetch_one(db.sqlite())
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn the_fleet_is_counted_by_state_from_each_servers_latest_installs() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let now = Utc::now();
    for (n, id) in ["acme-web-01", "acme-web-02", "acme-web-03"]
        .iter()
        .enumerate()
    {
        db.server_connected(&hello("acme-paris", id), n as u64 + 1, now)
            .await
            .unwrap();
    }
    let web1 = ServerId::parse("acme-web-01").unwrap();
    let web2 = ServerId::parse("acme-web-02").unwrap();
    let mut down = module("ecommerce", "5.8.0");
    down.state = ModuleState::Maintenance;
    let mut waiting = module("phygitalapi", "2.1.0");
    waiting.pending_version = Some(Version::parse("2.2.0").unwrap());
    let problem = Problem {
        file: None,
        line: None,
        message: "a hook names no module".to_owned(),
    };
    db.replace_inventory(&web1, &[down, waiting], &[problem], now)
        .await
        .unwrap();
    db.replace_inventory(&web2, &[module("ecommerce", "5.8.0")], &[], now)
        .await
        .unwrap();
    // web-02's ecommerce failed, then succeeded: not failed. web-01's
    // ecommerce succeeded, then failed: failed.
    let install = |id: &str, ok: bool, minutes: i64| flotilla_proto::link::InstallResult {
        install_id: id.to_owned(),
        module: "ecommerce".to_owned(),
        from_version: None,
        to_version: "5.9.0".to_owned(),
        command_id: None,
        ok,
        downtime_ms: 1,
        message: String::new(),
        phase: None,
        hook_output: Vec::new(),
        rolled_back: !ok,
        rollback_error: None,
        warnings: Vec::new(),
        started_at: now - Duration::minutes(minutes),
        finished_at: now - Duration::minutes(minutes) + Duration::seconds(5),
    };
    db.install_result(&web2, &install("a", false, 10))
        .await
        .unwrap();
    db.install_result(&web2, &install("b", true, 5))
        .await
        .unwrap();
    db.install_result(&web1, &install("c", true, 10))
        .await
        .unwrap();
    db.install_result(&web1, &install("d", false, 5))
        .await
        .unwrap();
    let counts = db.fleet_counts().await.unwrap();
    assert_eq!(
        counts,
        super::FleetCounts {
            sites: 1,
            servers: 3,
            online: 3,
            offline: 0,
            maintenance: 1,
            failed: 1,
            update_available: 1,
            problems: 1,
        }
    );
    let failed = db
        .servers_page(
            &super::ServerFilter {
                state: Some(super::ServerState::Failed),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap()
        .0;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, "acme-web-01");
}

#[tokio::test]
async fn a_passs_changes_are_written_whole_in_one_statement_each_and_its_log_in_order() {
    use crate::states::{SiteState, StepState};
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    insert_rollout(db.sqlite(), "running", "waiting", "pending")
        .await
        .unwrap();
    let (_, mut sites, mut steps) = db.rollout_state(1).await.unwrap().unwrap();
    let at = Utc::now();
    sites[0].state = SiteState::Running;
    sites[0].started_at = Some(at);
    sites[0].planned_end = Some(at + Duration::minutes(30));
    sites[0].preflight = Some("{}".to_owned());
    steps[0].state = StepState::Starting;
    steps[0].attempts = 1;
    steps[0].command_id = Some("rollout-1-acme-web-ecommerce".to_owned());
    steps[0].ordered_at = Some(at);
    steps[0].message = Some("ordered".to_owned());
    let line = |n: u32| ("flotilla".to_owned(), format!("step {n}"), String::new());
    let changes = super::RolloutChanges {
        rollout: None,
        sites: sites.clone(),
        steps: steps.clone(),
        log: vec![line(1), line(2), line(3)],
    };
    db.save_rollout(1, at, &changes).await.unwrap();
    let (_, read_sites, read_steps, log) = db.rollout(1).await.unwrap().unwrap();
    assert_eq!(read_sites, sites);
    assert_eq!(read_steps, steps);
    // What SQL compares as text reads as the time it was.
    let started: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM rollout_sites WHERE started_at = ? AND planned_end > ?")
            .bind(at)
            .bind(at)
            .fetch_optional(db.sqlite())
            .await
            .unwrap();
    assert!(started.is_some());

    // A second pass's lines follow the first's, one line alone too.
    let more = super::RolloutChanges {
        log: vec![line(4), line(5)],
        ..Default::default()
    };
    db.save_rollout(1, at, &more).await.unwrap();
    let one = super::RolloutChanges {
        log: vec![line(6)],
        ..Default::default()
    };
    db.save_rollout(1, at, &one).await.unwrap();
    let first: Vec<i64> = log.iter().map(|l| l.seq).collect();
    assert_eq!(first, vec![1, 2, 3]);
    let log = db.rollout(1).await.unwrap().unwrap().3;
    let numbered: Vec<(i64, String)> = log.into_iter().map(|l| (l.seq, l.action)).collect();
    assert_eq!(
        numbered,
        (1..=6)
            .map(|n| (n, format!("step {n}")))
            .collect::<Vec<_>>()
    );
}

fn agent_package(sha: char, platform: &str) -> super::PackageRecord {
    super::PackageRecord {
        sha256: sha.to_string().repeat(64),
        module: "flotilla-agent".to_owned(),
        version: "1.1.0".to_owned(),
        kind: "agent".to_owned(),
        size: Some(1),
        signature: "0".repeat(128),
        url: None,
        created_at: Utc::now(),
        platform: platform.to_owned(),
    }
}

#[tokio::test]
async fn a_module_version_is_one_content_per_platform() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let now = Utc::now();
    let both = [
        agent_package('a', "linux-x86_64"),
        agent_package('b', "windows-x86_64"),
    ];
    assert!(db.publish("1.1", "", &both, now).await.unwrap().unwrap());
    let release = db.release("1.1").await.unwrap().unwrap();
    let platforms: Vec<&str> = release
        .packages
        .iter()
        .map(|p| p.platform.as_str())
        .collect();
    assert_eq!(platforms.len(), 2);
    assert!(platforms.contains(&"linux-x86_64") && platforms.contains(&"windows-x86_64"));
    // Another content for the same version and platform is refused, named.
    let conflict = db
        .publish("1.2", "", &[agent_package('c', "linux-x86_64")], now)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        conflict.to_string(),
        format!(
            "flotilla-agent 1.1.0 for linux-x86_64 was already published with sha256 {}; a module version never changes content: publish a new version",
            "a".repeat(64)
        )
    );
    assert!(db.release("1.2").await.unwrap().is_none());
}
