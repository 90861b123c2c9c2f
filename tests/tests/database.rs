//! The database engines against the real thing: a PostgreSQL server started
//! for each test, and SQLite files. Fingerprints and drift, automatic
//! upgrades (all or nothing, with history), script-by-script runs, the lock,
//! backups.

#![allow(clippy::unwrap_used)]

use flotilla_proto::database::{Database, Engine, Fingerprint, Script, Settings};
use flotilla_tests::postgres::Postgres;
use flotilla_tests::shop::{STANDARD_PG, upgrade_scripts};

fn script(name: &str, sql: &str) -> Script {
    Script {
        name: name.into(),
        sql: sql.into(),
    }
}

fn pg(url: &str) -> Settings {
    Settings {
        engine: Engine::Postgres,
        url: Some(url.into()),
        password_file: None,
        path: None,
        pg_bin_dir: None,
    }
}

/// A database with the standard schema of 1.0.0.
async fn standard(server: &Postgres, name: &str) -> Database {
    let url = server.create_database(name);
    let db = Database::connect(&pg(&url)).await.unwrap();
    db.apply(&script("standard.sql", STANDARD_PG))
        .await
        .unwrap();
    db
}

/// What the package builder does: the standard of 1.0.0 and of 2.0.0, from a
/// scratch database.
async fn standards(server: &Postgres) -> (Fingerprint, Fingerprint) {
    let dir = tempfile::tempdir().unwrap();
    let scratch = Database::scratch(Engine::Postgres, Some(&server.url("postgres")), dir.path())
        .await
        .unwrap();
    scratch
        .database
        .apply(&script("standard.sql", STANDARD_PG))
        .await
        .unwrap();
    let from = scratch.database.fingerprint().await.unwrap();
    for s in upgrade_scripts() {
        scratch.database.apply(&s).await.unwrap();
    }
    let to = scratch.database.fingerprint().await.unwrap();
    scratch.remove().await.unwrap();
    (from, to)
}

#[tokio::test]
async fn an_untouched_standard_database_shows_no_drift_run_after_run() {
    let server = Postgres::start();
    let (from, _) = standards(&server).await;
    // Tagged with the major version of the server that printed it.
    let major = from.major_version.clone().unwrap();
    assert!(major.parse::<u32>().unwrap() >= 10, "{major}");
    let kinds: Vec<&str> = from.objects.iter().map(|o| o.kind.as_str()).collect();
    for kind in [
        "table",
        "index",
        "view",
        "function",
        "procedure",
        "trigger",
        "sequence",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let db = standard(&server, "shop").await;
    for _ in 0..3 {
        let seen = db.fingerprint().await.unwrap();
        assert!(
            from.drift(&seen).is_empty(),
            "{:?}",
            from.drift(&seen).summary()
        );
        assert_eq!(seen.hash(), from.hash());
    }
    // Data changes are not drift; the history table is not part of the schema.
    server.psql(
        "shop",
        "INSERT INTO customers (name) VALUES ('Grace'); UPDATE orders SET total = 1;",
    );
    db.history().await.unwrap();
    let again = Database::connect(&pg(&server.url("shop"))).await.unwrap();
    assert!(from.drift(&again.fingerprint().await.unwrap()).is_empty());
    // The scratch database is gone.
    assert_eq!(
        server.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'flotilla_scratch%'"
        ),
        "0"
    );
}

#[tokio::test]
async fn each_customization_is_detected_and_named() {
    let server = Postgres::start();
    let (from, _) = standards(&server).await;
    let cases = [
        (
            "changed_view",
            "CREATE OR REPLACE VIEW v_orders AS SELECT o.id, c.name, o.total, o.placed_at FROM orders o JOIN customers c ON c.id = o.customer_id",
            "modified view public.v_orders",
        ),
        (
            "changed_function",
            "CREATE OR REPLACE FUNCTION order_total(p_customer integer) RETURNS numeric LANGUAGE sql AS $$ SELECT COALESCE(sum(total), 0) * 1.2 FROM orders WHERE customer_id = p_customer $$",
            "modified function public.order_total(p_customer integer)",
        ),
        (
            "changed_procedure",
            "CREATE OR REPLACE PROCEDURE archive_orders(p_before timestamptz) LANGUAGE sql AS $$ DELETE FROM orders WHERE placed_at < p_before - interval '1 year' $$",
            "modified procedure public.archive_orders(IN p_before timestamp with time zone)",
        ),
        (
            "extra_column",
            "ALTER TABLE customers ADD COLUMN loyalty_code text",
            "column public.customers.loyalty_code added (text)",
        ),
        (
            "changed_type",
            "ALTER TABLE customers ALTER COLUMN email TYPE varchar(320)",
            "column public.customers.email type text → character varying(320)",
        ),
        (
            "dropped_not_null",
            "ALTER TABLE customers ALTER COLUMN name DROP NOT NULL",
            "column public.customers.name is nullable (standard: NOT NULL)",
        ),
        (
            "changed_default",
            "ALTER TABLE orders ALTER COLUMN total SET DEFAULT 5",
            "column public.orders.total default 0 → 5",
        ),
        (
            "extra_constraint",
            "ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total >= 0)",
            "constraint public.orders.orders_total_positive added (CHECK ((total >= (0)::numeric)))",
        ),
        (
            "dropped_index",
            "DROP INDEX orders_customer_idx",
            "missing index public.orders_customer_idx",
        ),
    ];
    for (name, change, expected) in cases {
        let db = standard(&server, name).await;
        server.psql(name, change);
        let drift = from.drift(&db.fingerprint().await.unwrap());
        assert_eq!(drift.summary(), vec![expected.to_owned()], "{name}");
        if let Some(modified) = drift.modified.first() {
            assert_ne!(modified.standard, modified.actual);
            assert!(!modified.standard.is_empty() && !modified.actual.is_empty());
        }
        // Nothing ran: no history table.
        assert_eq!(
            server.psql(
                name,
                "SELECT count(*) FROM pg_tables WHERE tablename = 'flotilla_schema_history'"
            ),
            "0",
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_standard_database_upgrades_all_or_nothing_with_its_history() {
    let server = Postgres::start();
    let (from, to) = standards(&server).await;
    let db = standard(&server, "shop").await;
    let backups = tempfile::tempdir().unwrap();
    let lock = db.lock().await.unwrap();
    let backup = db.backup(backups.path(), "database-1.0.0").await.unwrap();
    assert!(std::fs::metadata(&backup).unwrap().len() > 0);
    let runs = db
        .upgrade(
            &lock,
            "database",
            "2.0.0",
            &upgrade_scripts(),
            "flotilla (automatic upgrade)",
        )
        .await
        .unwrap();
    assert!(runs.iter().all(|r| r.ok), "{runs:?}");
    let now = db.fingerprint().await.unwrap();
    assert!(to.drift(&now).is_empty(), "{:?}", to.drift(&now).summary());
    assert_eq!(now.hash(), to.hash());
    let history = db.history().await.unwrap();
    let names: Vec<(&str, &str)> = history
        .iter()
        .map(|h| (h.script.as_str(), h.outcome.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("001_loyalty.sql", "succeeded"),
            ("002_view.sql", "succeeded"),
            ("003_index.sql", "succeeded")
        ]
    );
    assert_eq!(history[0].checksum, upgrade_scripts()[0].checksum());
    assert_eq!(
        history[0].checksum,
        script(
            "x",
            "ALTER TABLE customers ADD COLUMN loyalty_points integer NOT NULL DEFAULT 0;\n"
        )
        .checksum(),
        "line endings do not change the checksum"
    );
    assert_eq!(history[0].applied_by, "flotilla (automatic upgrade)");
    assert_eq!(history[0].version, "2.0.0");
    drop(lock);

    // The backup is a real pg_dump archive: it restores into a new database
    // with the schema of before.
    let restored = server.create_database("restored");
    let out = std::process::Command::new(server.bin.join("pg_restore"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "flotilla",
            "--no-owner",
            "-d",
            "restored",
        ])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = Database::connect(&pg(&restored)).await.unwrap();
    assert!(
        from.drift(&restored.fingerprint().await.unwrap())
            .is_empty()
    );

    // A failing script takes the whole upgrade back.
    let other = standard(&server, "other").await;
    let lock = other.lock().await.unwrap();
    let mut broken = upgrade_scripts();
    broken[1] = script(
        "002_view.sql",
        "CREATE OR REPLACE VIEW v_orders AS\n  SELECT o.id, c.nam\n  FROM orders o JOIN customers c ON c.id = o.customer_id;\n",
    );
    let runs = other
        .upgrade(
            &lock,
            "database",
            "2.0.0",
            &broken,
            "flotilla (automatic upgrade)",
        )
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs[0].ok && !runs[1].ok);
    assert!(
        runs[1]
            .message
            .starts_with("line 2: column c.nam does not exist"),
        "{}",
        runs[1].message
    );
    let after = other.fingerprint().await.unwrap();
    assert!(
        from.drift(&after).is_empty(),
        "wholly 1.0.0 again: {:?}",
        from.drift(&after).summary()
    );
    let history = other.history().await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].outcome, "failed");
    assert_eq!(history[0].script, "002_view.sql");
}

#[tokio::test]
async fn scripts_run_one_by_one_a_failed_one_is_rolled_back_and_retried() {
    let server = Postgres::start();
    let (_, to) = standards(&server).await;
    let db = standard(&server, "shop").await;
    let lock = db.lock().await.unwrap();
    let scripts = upgrade_scripts();
    let run = db
        .run_script(&lock, "database", "2.0.0", &scripts[0], "alice")
        .await
        .unwrap();
    assert!(run.ok, "{run:?}");
    // Script 2 fails half-way: its first statement is rolled back with it.
    let broken = script(
        "002_view.sql",
        "CREATE TABLE half_done (id int);\nCREATE OR REPLACE VIEW v_orders AS SELECT nothing FROM orders;\n",
    );
    let run = db
        .run_script(&lock, "database", "2.0.0", &broken, "alice")
        .await
        .unwrap();
    assert!(!run.ok);
    assert!(
        run.message.contains("its transaction was rolled back"),
        "{}",
        run.message
    );
    assert_eq!(
        server.psql(
            "shop",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'half_done'"
        ),
        "0"
    );
    // Fixed, retried.
    let run = db
        .run_script(&lock, "database", "2.0.0", &scripts[1], "alice")
        .await
        .unwrap();
    assert!(run.ok, "{run:?}");
    // The last one applied by hand, and marked so.
    server.psql("shop", &scripts[2].sql);
    db.record(&flotilla_proto::database::History {
        module: "database".into(),
        version: "2.0.0".into(),
        script: scripts[2].name.clone(),
        checksum: scripts[2].checksum(),
        applied_by: "alice".into(),
        applied_at: chrono::Utc::now(),
        duration_ms: 0,
        outcome: "marked applied".into(),
        message: "applied by hand".into(),
    })
    .await
    .unwrap();
    let history = db.history().await.unwrap();
    let rows: Vec<(&str, &str, &str)> = history
        .iter()
        .map(|h| (h.script.as_str(), h.outcome.as_str(), h.applied_by.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("001_loyalty.sql", "succeeded", "alice"),
            ("002_view.sql", "failed", "alice"),
            ("002_view.sql", "succeeded", "alice"),
            ("003_index.sql", "marked applied", "alice"),
        ]
    );
    assert!(to.drift(&db.fingerprint().await.unwrap()).is_empty());
}

#[tokio::test]
async fn two_upgrades_at_once_never_interleave() {
    let server = Postgres::start();
    let db = standard(&server, "shop").await;
    let other = Database::connect(&pg(&server.url("shop"))).await.unwrap();
    let held = db.lock().await.unwrap();
    let refused = other.lock().await.unwrap_err().to_string();
    assert!(
        refused.starts_with(
            "another upgrade of this database is running (the lock is held by PostgreSQL backend"
        ),
        "{refused}"
    );
    drop(held);
    // Released with its connection.
    let mut again = other.lock().await;
    for _ in 0..100 {
        if again.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        again = other.lock().await;
    }
    again.unwrap();
}

#[tokio::test]
async fn sqlite_databases_are_fingerprinted_upgraded_locked_and_backed_up() {
    let dir = tempfile::tempdir().unwrap();
    let standard_sql = "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\r\n\
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers (id), total REAL NOT NULL DEFAULT 0);\n\
        CREATE INDEX orders_customer_idx ON orders (customer_id);\n\
        CREATE VIEW v_orders AS SELECT o.id, c.name, o.total FROM orders o JOIN customers c ON c.id = o.customer_id;\n\
        CREATE TRIGGER orders_positive BEFORE INSERT ON orders WHEN NEW.total < 0 BEGIN SELECT RAISE(ABORT, 'negative total'); END;\n";
    let scratch = Database::scratch(Engine::Sqlite, None, dir.path())
        .await
        .unwrap();
    scratch
        .database
        .apply(&script("standard.sql", standard_sql))
        .await
        .unwrap();
    let from = scratch.database.fingerprint().await.unwrap();
    let scripts = vec![
        script(
            "001.sql",
            "ALTER TABLE customers ADD COLUMN loyalty_points INTEGER NOT NULL DEFAULT 0;",
        ),
        script(
            "002.sql",
            "DROP VIEW v_orders;\nCREATE VIEW v_orders AS SELECT o.id, c.name, o.total, c.loyalty_points FROM orders o JOIN customers c ON c.id = o.customer_id;",
        ),
    ];
    for s in &scripts {
        scratch.database.apply(s).await.unwrap();
    }
    let to = scratch.database.fingerprint().await.unwrap();
    scratch.remove().await.unwrap();
    assert_eq!(from.objects.len(), 5, "{:?}", from.objects);

    let file = dir.path().join("shop.sqlite");
    let settings = Settings {
        engine: Engine::Sqlite,
        url: None,
        password_file: None,
        path: Some(file.clone()),
        pg_bin_dir: None,
    };
    assert!(
        Database::connect(&settings)
            .await
            .unwrap_err()
            .to_string()
            .contains("no such file")
    );
    std::fs::write(&file, b"").unwrap();
    let db = Database::connect(&settings).await.unwrap();
    db.apply(&script("standard.sql", standard_sql))
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(from.drift(&db.fingerprint().await.unwrap()).is_empty());
    }
    // Locked against a second upgrade.
    let lock = db.lock().await.unwrap();
    let second = Database::connect(&settings).await.unwrap();
    assert!(
        second
            .lock()
            .await
            .unwrap_err()
            .to_string()
            .starts_with("another upgrade of this database is running")
    );
    let backup = db
        .backup(&dir.path().join("backups"), "database-1.0.0")
        .await
        .unwrap();
    let runs = db
        .upgrade(
            &lock,
            "database",
            "2.0.0",
            &scripts,
            "flotilla (automatic upgrade)",
        )
        .await
        .unwrap();
    assert!(runs.iter().all(|r| r.ok), "{runs:?}");
    assert!(to.drift(&db.fingerprint().await.unwrap()).is_empty());
    assert_eq!(db.history().await.unwrap().len(), 2);
    // The backup is the database as it was.
    let old = Database::connect(&Settings {
        path: Some(backup),
        ..settings.clone()
    })
    .await
    .unwrap();
    assert!(from.drift(&old.fingerprint().await.unwrap()).is_empty());
    // A customized view is named.
    second
        .apply(&script(
            "custom.sql",
            "DROP VIEW v_orders; CREATE VIEW v_orders AS SELECT 1 AS id;",
        ))
        .await
        .unwrap();
    assert_eq!(
        to.drift(&db.fingerprint().await.unwrap()).summary(),
        vec!["modified view v_orders"]
    );
}

#[tokio::test]
async fn a_postgres_url_asking_for_tls_gets_verified_tls() {
    let server = Postgres::start_tls();
    let url = server.create_database("shop");
    let ca = flotilla_tests::ca_file();
    let verified = format!("{url}?sslmode=verify-full&sslrootcert={ca}");
    let db = Database::connect(&pg(&verified)).await.unwrap();
    db.fingerprint().await.unwrap();
    // The server sees the connection encrypted.
    let encrypted = server.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.datname = 'shop'",
    );
    assert_ne!(encrypted, "0", "no encrypted connection to shop");
    db.close().await;

    // A CA that did not issue the server's certificate is refused.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("other.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other_ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let refused = Database::connect(&pg(&format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    )))
    .await;
    let error = match refused {
        Ok(db) => db.fingerprint().await.err().map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.to_lowercase().contains("certificate")),
        "{error:?}"
    );
}

// --- On a real agent: the package builder, the automatic upgrade at
// install, the refusal and the guided upgrade of a customized database.

mod agent {
    use std::path::Path;

    use flotilla_tests::postgres::Postgres;
    use flotilla_tests::{Agent, controller_cli, wait_until};
    use serde_json::{Value, json};

    use flotilla_tests::shop::{
        STANDARD_PG, ShopRelease, build_package, database_agent, upgrade_scripts,
    };

    const NO_CONTROLLER: &str = "https://127.0.0.1:9";

    fn s(path: &Path) -> &str {
        path.to_str().unwrap()
    }

    async fn call(
        agent: &Agent,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
    ) -> (u16, Value) {
        // The agent's portal as an administrator of its server; the
        // controller with the harness's admin token.
        let client = match url.starts_with(&agent.portal_base()) {
            true => agent.portal_http(),
            false => flotilla_tests::http(),
        };
        let mut request = client.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Installs the pending package from the portal's API; returns how it ended.
    async fn install(agent: &Agent) -> Value {
        let url = format!("{}/api/modules/database/install", agent.portal_base());
        let (status, body) = call(agent, reqwest::Method::POST, url.clone(), Some(json!({}))).await;
        assert_eq!(status, 202, "{body}");
        wait_until("the install to finish", async || {
            let (_, status) = call(agent, reqwest::Method::GET, url.clone(), None).await;
            if status["running"] == false {
                Ok(status)
            } else {
                Err(status.to_string())
            }
        })
        .await
    }

    /// Waits for the restore of the database module to `version` to end.
    async fn restored(agent: &Agent, version: &str) -> Value {
        let url = format!("{}/api/modules/database/install", agent.portal_base());
        wait_until("the restore to finish", async || {
            let (_, status) = call(agent, reqwest::Method::GET, url.clone(), None).await;
            if status["running"] == false && status["to"] == version {
                Ok(status)
            } else {
                Err(status.to_string())
            }
        })
        .await
    }

    #[tokio::test]
    async fn a_standard_database_is_upgraded_by_the_install_with_its_history() {
        let server = Postgres::start();
        let dir = tempfile::tempdir().unwrap();
        let package = build_package(dir.path(), &server).await;
        server.create_database("shop");
        server.psql("shop", STANDARD_PG);
        let agent = database_agent(dir.path(), &server, "shop", &package, NO_CONTROLLER).await;

        let (status, review) = call(
            &agent,
            reqwest::Method::GET,
            format!("{}/api/modules/database/database", agent.portal_base()),
            None,
        )
        .await;
        assert_eq!(status, 200, "{review}");
        assert_eq!(review["standard"], true, "{review}");
        assert_eq!(review["from_version"], "1.0.0");
        assert_eq!(review["to_version"], "2.0.0");
        assert_eq!(review["scripts"].as_array().unwrap().len(), 3);

        let done = install(&agent).await;
        assert_eq!(done["result"]["ok"], true, "{done}");
        let steps = flotilla_tests::event_texts(&done);
        for expected in [
            "the database is the standard schema of 1.0.0",
            "database upgraded to the standard schema of 2.0.0",
        ] {
            assert!(steps.contains(&expected), "{expected} in {steps:?}");
        }
        assert!(
            steps
                .iter()
                .any(|s| s.starts_with("database backed up to ")),
            "{steps:?}"
        );
        // In the database: the new column, and the history of the three scripts.
        assert_eq!(
            server.psql(
                "shop",
                "SELECT loyalty_points FROM customers WHERE name = 'Ada'"
            ),
            "0"
        );
        assert_eq!(
            server.psql("shop", "SELECT string_agg(script || ' ' || outcome || ' ' || applied_by, ', ' ORDER BY id) FROM flotilla_schema_history"),
            "001_loyalty.sql succeeded flotilla (automatic upgrade), 002_view.sql succeeded flotilla (automatic upgrade), 003_index.sql succeeded flotilla (automatic upgrade)"
        );
        let version =
            std::fs::read_to_string(agent.data.join("apps/database/version.txt")).unwrap();
        assert_eq!(version.trim(), "2.0.0");
        // The backup is a pg_dump archive beside the module backups.
        let backups: Vec<_> = std::fs::read_dir(agent.data.join("bin/updates/backups/databases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            backups
                .iter()
                .any(|b| b.starts_with("database_1.0.0_") && b.ends_with(".dump")),
            "{backups:?}"
        );

        // What restoring that backup would throw away: the application's
        // writes since, table by table (PostgreSQL's counters; each psql
        // session flushes its own when it ends).
        let discard_url = format!(
            "{}/api/modules/database/database/discard?version=1.0.0",
            agent.portal_base()
        );
        server.psql(
            "shop",
            "INSERT INTO customers (name) VALUES ('Hedy'), ('Radia'); UPDATE customers SET email = name || '@example.com'; DELETE FROM customers WHERE name = 'Radia';",
        );
        let discard = wait_until("the writes to be counted", async || {
            let (status, discard) =
                call(&agent, reqwest::Method::GET, discard_url.clone(), None).await;
            let customers = discard["tables"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["table"] == "public.customers").cloned());
            match customers {
                Some(c) if status == 200 && c["inserted"] == 2 && c["deleted"] == 1 => {
                    Ok((discard, c))
                }
                _ => Err(format!("{status} {discard}")),
            }
        })
        .await;
        let (discard, customers) = discard;
        assert!(customers["updated"].as_i64().unwrap() >= 3, "{discard}");
        assert_eq!(discard["counted"], true);
        assert_eq!(discard["counters_reset"], false);
        assert!(discard["taken_at"].is_string(), "{discard}");
        assert!(
            discard["backup"].as_str().unwrap().ends_with(".dump"),
            "{discard}"
        );
        let (status, _) = call(
            &agent,
            reqwest::Method::GET,
            discard_url.replace("1.0.0", "0.9.0"),
            None,
        )
        .await;
        assert_eq!(status, 404, "no backup of 0.9.0");

        // Going back to 1.0.0 takes the database back too.
        let url = format!("{}/api/modules/database/rollback", agent.portal_base());
        let (status, body) = call(
            &agent,
            reqwest::Method::POST,
            url,
            Some(json!({"to": "1.0.0"})),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let back = restored(&agent, "1.0.0").await;
        assert_eq!(back["result"]["ok"], true, "{back}");
        // The install's record says what the restore discarded.
        let steps = flotilla_tests::event_texts(&back);
        assert!(
            steps
                .iter()
                .any(|s| s.starts_with("database restored to 1.0.0 from ")
                    && s.contains("public.customers 2 inserted")),
            "{steps:?}"
        );
        assert_eq!(
            server.psql("shop", "SELECT count(*) FROM information_schema.columns WHERE column_name = 'loyalty_points'"),
            "0"
        );
        // The history kept what ran, and says the database was restored.
        assert_eq!(
            server.psql("shop", "SELECT string_agg(script || ' ' || outcome, ', ' ORDER BY id) FROM flotilla_schema_history"),
            "001_loyalty.sql succeeded, 002_view.sql succeeded, 003_index.sql succeeded, (restore) restored"
        );
        let (from, _) = super::standards(&server).await;
        let db = flotilla_proto::database::Database::connect(&super::pg(&server.url("shop")))
            .await
            .unwrap();
        assert!(from.drift(&db.fingerprint().await.unwrap()).is_empty());
        let version =
            std::fs::read_to_string(agent.data.join("apps/database/version.txt")).unwrap();
        assert_eq!(version.trim(), "1.0.0");
    }

    #[tokio::test]
    async fn a_restore_of_the_files_only_keeps_the_databases_writes() {
        let server = Postgres::start();
        let dir = tempfile::tempdir().unwrap();
        let package = build_package(dir.path(), &server).await;
        server.create_database("kept");
        server.psql("kept", STANDARD_PG);
        let controller = flotilla_tests::Controller::start(dir.path()).await;
        let agent =
            database_agent(dir.path(), &server, "kept", &package, &controller.grpc_url).await;
        let done = install(&agent).await;
        assert_eq!(done["result"]["ok"], true, "{done}");
        // The application writes after the upgrade.
        server.psql("kept", "INSERT INTO customers (name) VALUES ('Hedy')");
        // Before choosing, the operator reads what a restore would discard,
        // through the controller.
        let discard = wait_until("the write to be counted", async || {
            let (status, discard) = controller
                .get("/api/v1/servers/kept/modules/database/database/discard?version=1.0.0")
                .await;
            let inserted = discard["tables"].as_array().and_then(|t| {
                t.iter()
                    .find(|t| t["table"] == "public.customers")
                    .map(|t| t["inserted"].clone())
            });
            (status == 200 && inserted == Some(json!(1)))
                .then_some(discard.clone())
                .ok_or(format!("{status} {discard}"))
        })
        .await;
        assert!(
            discard["taken_at"].is_string() && discard["counted"] == true,
            "{discard}"
        );
        let (status, _) = controller
            .get("/api/v1/servers/kept/modules/database/database/discard?version=0.1.0")
            .await;
        assert_eq!(status, 404, "no backup of 0.1.0");
        let (status, _) = controller
            .get("/api/v1/servers/kept/modules/database/database/discard")
            .await;
        assert_eq!(status, 400, "the version is needed");

        let url = format!("{}/api/modules/database/rollback", agent.portal_base());
        let (status, body) = call(
            &agent,
            reqwest::Method::POST,
            url.clone(),
            Some(json!({"to": "1.0.0", "database": "discard everything"})),
        )
        .await;
        assert!(
            (400..500).contains(&status),
            "an unknown choice is refused: {status} {body}"
        );

        let (status, body) = call(
            &agent,
            reqwest::Method::POST,
            url,
            Some(json!({"to": "1.0.0", "database": "keep"})),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let back = restored(&agent, "1.0.0").await;
        assert_eq!(back["result"]["ok"], true, "{back}");
        let texts = flotilla_tests::event_texts(&back);
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("the database of database is left as it is")),
            "{texts:?}"
        );
        let version =
            std::fs::read_to_string(agent.data.join("apps/database/version.txt")).unwrap();
        assert_eq!(version.trim(), "1.0.0", "the files went back");
        assert_eq!(
            server.psql("kept", "SELECT count(*) FROM customers WHERE name = 'Hedy'"),
            "1",
            "the row written after the upgrade is kept"
        );
        assert_eq!(
            server.psql(
                "kept",
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'loyalty_points'"
            ),
            "1",
            "the database stays at 2.0.0"
        );

        // Then an operator decides to restore the database after all: the
        // answer says what was thrown away, and the audit trail who did it.
        let alice = controller.token_for("alice", "operator").await;
        let restore_url = format!(
            "{}/api/v1/servers/kept/modules/database/database/restore",
            controller.http_url
        );
        let response = flotilla_tests::http()
            .post(&restore_url)
            .bearer_auth(&alice)
            .json(&json!({"version": "1.0.0"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let discarded: Value = response.json().await.unwrap();
        let customers = discarded["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == "public.customers")
            .cloned()
            .unwrap_or_default();
        assert_eq!(customers["inserted"], 1, "{discarded}");
        assert_eq!(
            server.psql("kept", "SELECT count(*) FROM customers WHERE name = 'Hedy'"),
            "0",
            "the row written after the upgrade is gone, as the answer said"
        );
        assert_eq!(
            server.psql(
                "kept",
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'loyalty_points'"
            ),
            "0",
            "the database is back at 1.0.0"
        );
        let (_, audit) = controller
            .get("/api/v1/audit?action=database/restore")
            .await;
        assert!(
            audit
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["actor"] == "alice"
                    && e["action"].as_str().unwrap().contains("database/restore")
                    && e["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("public.customers 1 inserted"))),
            "{audit}"
        );

        // Upgraded again, then restored with its files through the
        // controller: the audit trail says what the restore would discard,
        // and the install's record what it did.
        let pending = agent.data.join("bin/updates/packages/database-2.0.0.zip");
        std::fs::copy(&package, &pending).unwrap();
        flotilla_tests::sign_beside(&pending);
        let again = install(&agent).await;
        assert_eq!(again["result"]["ok"], true, "{again}");
        server.psql("kept", "INSERT INTO customers (name) VALUES ('Grace')");
        wait_until("the write to be counted", async || {
            let (_, discard) = controller
                .get("/api/v1/servers/kept/modules/database/database/discard?version=1.0.0")
                .await;
            (discard["tables"].as_array().is_some_and(|t| !t.is_empty()))
                .then_some(())
                .ok_or(discard.to_string())
        })
        .await;
        let response = flotilla_tests::http()
            .post(format!(
                "{}/api/v1/servers/kept/modules/database/rollback",
                controller.http_url
            ))
            .bearer_auth(&alice)
            .json(&json!({"to": "1.0.0"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202);
        let back = restored(&agent, "1.0.0").await;
        assert_eq!(back["result"]["ok"], true, "{back}");
        let texts = flotilla_tests::event_texts(&back);
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("database restored to 1.0.0")
                    && t.contains("public.customers 1 inserted")),
            "{texts:?}"
        );
        assert_eq!(
            server.psql(
                "kept",
                "SELECT count(*) FROM customers WHERE name = 'Grace'"
            ),
            "0"
        );
        let (_, audit) = controller.get("/api/v1/audit?action=rollback").await;
        assert!(
            audit
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["actor"] == "alice"
                    && e["detail"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("restores the database too, discarding")
                            && d.contains("public.customers 1 inserted"))),
            "{audit}"
        );
    }

    #[tokio::test]
    async fn a_customized_database_is_refused_and_upgraded_script_by_script() {
        let server = Postgres::start();
        let dir = tempfile::tempdir().unwrap();
        let package = build_package(dir.path(), &server).await;
        server.create_database("custom");
        server.psql("custom", STANDARD_PG);
        // The customer's own column in the standard view.
        server.psql(
            "custom",
            "CREATE OR REPLACE VIEW v_orders AS SELECT o.id, c.name, o.total, o.placed_at FROM orders o JOIN customers c ON c.id = o.customer_id",
        );
        // Driven through the controller's REST API, as automation would.
        let controller = flotilla_tests::Controller::start(dir.path()).await;
        let agent = database_agent(
            dir.path(),
            &server,
            "custom",
            &package,
            &controller.grpc_url,
        )
        .await;
        controller
            .wait_for_server("custom", "online", |s| s["online"] == true)
            .await;
        let base = format!(
            "{}/api/v1/servers/custom/modules/database/database",
            controller.http_url
        );

        // Ordered through the controller, it is refused at order time, with
        // where to review it, and no install is recorded.
        let response = flotilla_tests::http()
            .post(format!(
                "{}/api/v1/servers/custom/modules/database/install",
                controller.http_url
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 409);
        let body: Value = response.json().await.unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("is customized")
                && message.contains("/database.html?server=custom&module=database"),
            "{message}"
        );
        let (_, installs) = controller.get("/api/v1/servers/custom/installs").await;
        assert_eq!(installs, json!([]), "nothing started");

        // The install refuses before changing anything.
        let refused = install(&agent).await;
        assert_eq!(refused["result"]["ok"], false, "{refused}");
        let cause = refused["result"]["cause"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            cause.contains("customized") && cause.contains("modified view public.v_orders"),
            "{refused}"
        );
        assert_eq!(
            server.psql(
                "custom",
                "SELECT count(*) FROM pg_tables WHERE tablename = 'flotilla_schema_history'"
            ),
            "0",
            "no script ran"
        );
        let version =
            std::fs::read_to_string(agent.data.join("apps/database/version.txt")).unwrap();
        assert_eq!(version.trim(), "1.0.0");

        // The doctor says so too, with where to review it.
        let (status, report) = call(
            &agent,
            reqwest::Method::GET,
            format!("{}/api/doctor", agent.portal_base()),
            None,
        )
        .await;
        assert_eq!(status, 200);
        let database = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "database")
            .cloned()
            .unwrap_or_default();
        assert_eq!(database["status"], "warn", "{report:#}");
        assert!(
            database["finding"]
                .as_str()
                .unwrap()
                .contains("customized (1 difference(s) from the standard 1.0.0: modified view public.v_orders)"),
            "{database}"
        );
        assert!(
            database["fix"]
                .as_str()
                .unwrap()
                .contains("/database/database"),
            "{database}"
        );

        // The review: the drift, with both definitions, and the scripts.
        let (status, review) = call(&agent, reqwest::Method::GET, base.clone(), None).await;
        assert_eq!(status, 200);
        assert_eq!(review["standard"], false);
        assert_eq!(review["summary"], json!(["modified view public.v_orders"]));
        let modified = &review["drift"]["modified"][0];
        assert!(modified["actual"].as_str().unwrap().contains("placed_at"));
        assert!(!modified["standard"].as_str().unwrap().contains("placed_at"));
        let page = flotilla_tests::http()
            .get(format!("{}/database/database", agent.portal_base()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("modified view public.v_orders") && page.contains("Run this script"),
            "{page}"
        );

        let alice = controller.token_for("alice", "operator").await;
        let act = async |script: &str, action: &str| {
            let response = flotilla_tests::http()
                .post(format!("{base}/scripts/{script}/{action}"))
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        };
        // One by one, in order.
        let (status, error) = act("002_view.sql", "run").await;
        assert_eq!(status, 409, "{error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("001_loyalty.sql comes before")
        );

        // The dashboard shows the drift, then the next script, and runs it.
        let browser = flotilla_tests::browser::Browser::start().await;
        browser.sign_in(&controller).await;
        browser
            .goto(&format!(
                "{}/database?server=custom&module=database",
                controller.http_url
            ))
            .await;
        let drift = browser
            .text_of("the drift on the dashboard", "#drift details.drift-item")
            .await;
        assert!(
            drift.contains("modified view public.v_orders") && drift.contains("placed_at"),
            "{drift}"
        );
        let next = browser
            .eval("return document.querySelector('article.script.next').dataset.script")
            .await;
        assert_eq!(next, "001_loyalty.sql");
        browser
            .eval("document.querySelector('button.run[data-script=\"001_loyalty.sql\"]').click(); return null")
            .await;
        wait_until("001 succeeded on the dashboard", async || {
            let state = browser
                .eval("const a = document.querySelector('article.script[data-script=\"001_loyalty.sql\"]'); return a ? a.dataset.state : null")
                .await;
            (state == "succeeded").then_some(()).ok_or(state.to_string())
        })
        .await;
        let ok = browser
            .eval("return document.querySelector('#last-run').dataset.ok")
            .await;
        assert_eq!(ok, "true");
        browser.quit().await;
        // Script 2 collides with the customization: it fails, rolled back.
        let (status, run) = act("002_view.sql", "run").await;
        assert_eq!(status, 200);
        assert_eq!(run["ok"], false, "{run}");
        assert!(
            run["message"]
                .as_str()
                .unwrap()
                .contains("its transaction was rolled back"),
            "{run}"
        );
        // The operator fixes the database, then retries.
        server.psql("custom", "DROP VIEW v_orders");
        let (_, run) = act("002_view.sql", "run").await;
        assert_eq!(run["ok"], true, "{run}");
        // The last one by hand.
        server.psql("custom", &upgrade_scripts()[2].sql);
        let (status, _) = act("003_index.sql", "mark-applied").await;
        assert_eq!(status, 200);
        let (status, _) = act("003_index.sql", "run").await;
        assert_eq!(status, 409, "already marked applied");

        let (_, review) = call(&agent, reqwest::Method::GET, base.clone(), None).await;
        assert_eq!(review["done"], true, "{review}");
        let history: Vec<String> = review["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                format!(
                    "{} {} {}",
                    h["script"].as_str().unwrap(),
                    h["outcome"].as_str().unwrap(),
                    h["applied_by"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            history,
            [
                "001_loyalty.sql succeeded admin",
                "002_view.sql failed alice",
                "002_view.sql succeeded alice",
                "003_index.sql marked applied alice"
            ]
        );
        // Now the install takes the module's files only.
        let done = install(&agent).await;
        assert_eq!(done["result"]["ok"], true, "{done}");
        let version =
            std::fs::read_to_string(agent.data.join("apps/database/version.txt")).unwrap();
        assert_eq!(version.trim(), "2.0.0");
        assert_eq!(
            server.psql("custom", "SELECT count(*) FROM flotilla_schema_history"),
            "4",
            "the install ran no script"
        );
    }
    #[tokio::test]
    async fn a_rollout_waits_for_the_database_review_then_carries_on() {
        use flotilla_tests::sites::{post, site, steps, wait_for_rollout};
        let server = Postgres::start();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let controller = flotilla_tests::Controller::start(d).await;
        let release = ShopRelease::build(d, &server).await;

        // A customized shop database on db-01, the shop on web-01.
        server.create_database("db01");
        server.psql("db01", STANDARD_PG);
        server.psql("db01", "CREATE OR REPLACE VIEW v_orders AS SELECT o.id, c.name, o.total, o.placed_at FROM orders o JOIN customers c ON c.id = o.customer_id");
        let _db = release
            .database_server(&controller, &server, "acme", "db-01", "db01")
            .await;
        let _web = release.shop_server(&controller, "acme", "web-01").await;
        release.publish(&controller).await;
        for (server_id, m) in [("db-01", "database"), ("web-01", "ecommerce")] {
            controller
                .wait_for_server(server_id, "2.0.0 pending", |s| {
                    flotilla_tests::module(s, m)["pending_version"] == "2.0.0"
                })
                .await;
        }

        let (status, created) = post(
            &controller,
            "/api/v1/rollouts",
            &json!({"release": "2026.12"}),
            "alice",
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_i64().unwrap();
        let waiting = wait_for_rollout(&controller, id, "waiting for the database review", |r| {
            site(r, "acme")["message"].as_str().is_some_and(|m| {
                m.starts_with("waiting for a database review of database on db-01")
            })
        })
        .await;
        let all = steps(&waiting, "acme");
        let web = all.iter().find(|s| s["module"] == "ecommerce").unwrap();
        assert_eq!(
            web["state"], "pending",
            "the shop waits for its database: {web}"
        );
        assert!(web["install"].is_null());
        let (_, installs) = controller.get("/api/v1/servers/db-01/installs").await;
        assert_eq!(
            installs,
            json!([]),
            "the order is refused before any install starts: none is recorded as failed"
        );

        // The review, through the controller, and the scripts one by one.
        let base = format!(
            "{}/api/v1/servers/db-01/modules/database/database",
            controller.http_url
        );
        let alice = controller.token_for("alice", "operator").await;
        let act = async |script: &str| {
            let response = flotilla_tests::http()
                .post(format!("{base}/scripts/{script}/run"))
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()
        };
        assert_eq!(act("001_loyalty.sql").await["ok"], true);
        server.psql("db01", "DROP VIEW v_orders");
        assert_eq!(act("002_view.sql").await["ok"], true);
        assert_eq!(act("003_index.sql").await["ok"], true);

        let done =
            wait_for_rollout(&controller, id, "succeeded", |r| r["state"] == "succeeded").await;
        assert_eq!(site(&done, "acme")["state"], "succeeded");
        for (server_id, m) in [("db-01", "database"), ("web-01", "ecommerce")] {
            controller
                .wait_for_server(server_id, "2.0.0 installed", |s| {
                    flotilla_tests::module(s, m)["installed_version"] == "2.0.0"
                })
                .await;
        }
        assert!(
            done["log"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["action"] == "database_review"),
            "{done}"
        );
    }

    /// Two sites; acme's shop fails after its database was upgraded. The
    /// site rollback puts every file back but leaves the database as it is,
    /// with what the application writes, until an operator decides; bravo
    /// updates untouched. The operator reads on the dashboard what a
    /// restore would discard, and restores: the writes are gone, and the
    /// rollout log and the audit trail say what was discarded, and who
    /// decided.
    #[tokio::test]
    async fn a_site_rollback_keeps_the_database_and_its_writes_until_an_operator_decides() {
        use flotilla_tests::sites::{hook, post, site, steps, wait_for_rollout};
        let server = Postgres::start();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let controller = flotilla_tests::Controller::start(d).await;
        let release = ShopRelease::build(d, &server).await;
        server.create_database("db01");
        server.psql("db01", STANDARD_PG);
        let _db = release
            .database_server(&controller, &server, "acme", "db-01", "db01")
            .await;
        let web = release.shop_server(&controller, "acme", "web-01").await;
        hook(
            &web,
            "POSTINSTALL",
            "ecommerce",
            "echo 'the shop cannot reach its payment provider' >&2; exit 1",
        );
        let _bravo = release.shop_server(&controller, "bravo", "web-02").await;
        release.publish(&controller).await;
        for (server_id, m) in [
            ("db-01", "database"),
            ("web-01", "ecommerce"),
            ("web-02", "ecommerce"),
        ] {
            controller
                .wait_for_server(server_id, "2.0.0 pending", |s| {
                    flotilla_tests::module(s, m)["pending_version"] == "2.0.0"
                })
                .await;
        }

        let (status, created) = post(
            &controller,
            "/api/v1/rollouts",
            &json!({"release": "2026.12", "strategy": {"failure": {"retries": 0, "max_failed_sites": 1}}}),
            "alice",
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_i64().unwrap();
        let waiting = wait_for_rollout(
            &controller,
            id,
            "acme waiting for a database decision",
            |r| {
                site(r, "acme")["state"] == "database_decision"
                    && site(r, "bravo")["state"] == "succeeded"
            },
        )
        .await;
        let acme = site(&waiting, "acme");
        assert!(
            acme["message"]
                .as_str()
                .unwrap()
                .contains("database on db-01 (at 2.0.0, upgraded from 1.0.0)"),
            "{acme}"
        );
        let database = steps(&waiting, "acme")
            .into_iter()
            .find(|s| s["module"] == "database")
            .unwrap();
        assert_eq!(database["state"], "database_decision", "{database}");
        for (server_id, m) in [("db-01", "database"), ("web-01", "ecommerce")] {
            controller
                .wait_for_server(server_id, "files back at 1.0.0", |s| {
                    flotilla_tests::module(s, m)["installed_version"] == "1.0.0"
                })
                .await;
        }
        // The database stayed upgraded; the application goes on writing.
        assert_eq!(
            server.psql("db01", "SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'loyalty_points'"),
            "1"
        );
        server.psql(
            "db01",
            "INSERT INTO orders (customer_id, total) VALUES (1, 10), (1, 20), (1, 30)",
        );
        assert_eq!(server.psql("db01", "SELECT count(*) FROM orders"), "4");

        // What a restore would discard, over REST: the three orders.
        let discard_url = format!(
            "{}/api/v1/servers/db-01/modules/database/database/discard?version=1.0.0",
            controller.http_url
        );
        let discard = wait_until("the three orders counted", async || {
            let response = flotilla_tests::http()
                .get(&discard_url)
                .send()
                .await
                .unwrap();
            let body: Value = response.json().await.unwrap();
            let orders = body["tables"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["table"] == "public.orders")
                .cloned();
            match orders {
                Some(t) if t["inserted"] == 3 => Ok(body),
                _ => Err(body.to_string()),
            }
        })
        .await;
        assert!(discard["taken_at"].is_string(), "{discard}");

        // Nothing is restored while nobody decides.
        let (_, still) = controller.get(&format!("/api/v1/rollouts/{id}")).await;
        assert_eq!(site(&still, "acme")["state"], "database_decision");
        assert_eq!(server.psql("db01", "SELECT count(*) FROM orders"), "4");

        // The operator reads it on the dashboard, and restores.
        let browser = flotilla_tests::browser::Browser::start().await;
        browser.sign_in(&controller).await;
        browser
            .goto(&format!("{}/rollouts#{id}", controller.http_url))
            .await;
        let shown = browser
            .text_of(
                "what a restore discards, on the dashboard",
                "li.database-decision[data-server='db-01'] tr[data-table='public.orders']",
            )
            .await;
        assert!(
            shown.contains("public.orders") && shown.contains('3'),
            "{shown}"
        );
        browser
            .eval("window.confirm = () => true; document.querySelector('button[data-database=\"restore\"][data-site=\"acme\"]').click(); return null")
            .await;
        let done = wait_for_rollout(&controller, id, "acme rolled back", |r| {
            site(r, "acme")["state"] == "rolled_back" && r["finished_at"].is_string()
        })
        .await;
        browser.quit().await;
        assert_eq!(done["state"], "failed", "1 of 2 sites did not update");
        assert_eq!(
            server.psql("db01", "SELECT count(*) FROM orders"),
            "1",
            "the restore discarded the three orders"
        );
        assert_eq!(
            server.psql("db01", "SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'loyalty_points'"),
            "0",
            "back to the standard 1.0.0 schema"
        );
        let database = steps(&done, "acme")
            .into_iter()
            .find(|s| s["module"] == "database")
            .unwrap();
        assert_eq!(database["database_decided_by"], "admin", "{database}");
        let log = done["log"].as_array().unwrap();
        let line = |action: &str| {
            log.iter()
                .find(|l| l["action"] == action)
                .unwrap_or_else(|| panic!("no {action} in {log:?}"))
        };
        assert_eq!(line("database_decision")["actor"], "flotilla");
        assert_eq!(line("database_restore")["actor"], "admin");
        let restored = line("database_restored")["detail"].as_str().unwrap();
        assert!(
            restored.contains("database on db-01")
                && restored.contains("public.orders 3 inserted, 0 updated, 0 deleted"),
            "{restored}"
        );
        // The audit trail: the decision, and the restore with its discard.
        let (_, audit) = controller.get("/api/v1/audit?action=database").await;
        let entries = audit.as_array().unwrap();
        let restore = entries
            .iter()
            .find(|e| e["action"] == format!("database restore (rollout {id})"))
            .unwrap_or_else(|| panic!("{audit}"));
        assert_eq!(restore["actor"], "admin");
        assert_eq!(restore["outcome"], 200);
        assert!(
            restore["detail"]
                .as_str()
                .unwrap()
                .contains("public.orders 3 inserted"),
            "{restore}"
        );
        assert!(
            entries.iter().any(|e| e["action"]
                == "POST /api/v1/rollouts/{id}/sites/{site}/database"
                && e["actor"] == "admin"),
            "{audit}"
        );
        // bravo was never touched by acme's rollback.
        controller
            .wait_for_server("web-02", "2.0.0 installed", |s| {
                flotilla_tests::module(s, "ecommerce")["installed_version"] == "2.0.0"
            })
            .await;
    }

    #[tokio::test]
    async fn an_agent_killed_around_the_database_upgrade_recovers_wholly_old_or_wholly_new() {
        let server = Postgres::start();
        let dir = tempfile::tempdir().unwrap();
        let package = build_package(dir.path(), &server).await;
        let (from, to) = super::standards(&server).await;
        // Killed once the database is upgraded but before the files: both go
        // back. Killed once the files are committed: both stay new.
        for (name, point, expected) in [
            ("crasha", "database_upgraded", "1.0.0"),
            ("crashb", "commit", "2.0.0"),
        ] {
            server.create_database(name);
            server.psql(name, STANDARD_PG);
            let mut agent =
                database_agent(dir.path(), &server, name, &package, NO_CONTROLLER).await;
            agent
                .relaunch(
                    "flotilla-agent-crashpoints",
                    &[("FLOTILLA_CRASH_AT", point)],
                )
                .await;
            let (status, body) = call(
                &agent,
                reqwest::Method::POST,
                format!("{}/api/modules/database/install", agent.portal_base()),
                Some(json!({})),
            )
            .await;
            assert_eq!(status, 202, "{body}");
            wait_until(
                "the agent to die at its crash point",
                async || match agent.child.try_wait() {
                    Ok(Some(_)) => Ok(()),
                    other => Err(format!("{other:?}")),
                },
            )
            .await;
            agent.relaunch("flotilla-agent", &[]).await;
            let marker = agent
                .data
                .join("bin/updates/journal/database.database.json");
            let note = if expected == "1.0.0" {
                "its database was restored from"
            } else {
                "its upgraded database is kept"
            };
            // The marker goes before the agent logs what it did: both.
            wait_until("recovered", async || {
                let version = std::fs::read_to_string(agent.data.join("apps/database/version.txt"))
                    .unwrap_or_default();
                let logged = agent.log().contains(note);
                (version.trim() == expected && !marker.exists() && logged)
                    .then_some(())
                    .ok_or(format!(
                        "{version} marker {} note logged {logged}",
                        marker.exists()
                    ))
            })
            .await;
            let db = flotilla_proto::database::Database::connect(&super::pg(&server.url(name)))
                .await
                .unwrap();
            let now = db.fingerprint().await.unwrap();
            let standard = if expected == "1.0.0" { &from } else { &to };
            assert!(
                standard.drift(&now).is_empty(),
                "{point}: {:?}",
                standard.drift(&now).summary()
            );
            let log = agent.log();
            assert!(log.contains(note), "{point}: {log}");
        }
    }

    /// The whole path of secrets, end to end: the admin's password and
    /// token, a browser session and its CSRF token, an API token for the
    /// pipeline, the publisher's key, an enrollment token, the agent's own
    /// key, and a database password file. After a full scenario (sign-in,
    /// tokens, enrollment, publish, a rollout that upgrades the database),
    /// none of them is in any log, API response, dashboard or portal page.
    #[tokio::test]
    async fn no_secret_reaches_a_log_an_api_response_or_a_page() {
        use flotilla_tests::{Controller, Session, anonymous, binary, ca_file, module};

        let server = Postgres::start();
        let dir = tempfile::tempdir().unwrap();
        server.create_database("shop");
        server.psql("shop", STANDARD_PG);
        let controller = Controller::start(&dir.path().join("controller")).await;
        let mut secrets: Vec<(&str, String)> = vec![
            ("the admin token", flotilla_tests::admin_token().to_owned()),
            (
                "the admin password",
                controller.admin_password.clone().unwrap(),
            ),
        ];

        // A person signs in and makes the pipeline's token.
        let session = Session::sign_in(
            &anonymous(),
            &controller.http_url,
            "admin",
            &controller.admin_password.clone().unwrap(),
        )
        .await;
        let cookie = session.cookie.split_once('=').unwrap().1.to_owned();
        secrets.push(("the session cookie", cookie));
        secrets.push(("the CSRF token", session.csrf.clone()));
        let created: Value = anonymous()
            .post(format!("{}/api/v1/tokens", controller.http_url))
            .headers(session.headers())
            .json(&json!({"name": "pipeline", "role": "publisher"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let pipeline = created["secret"].as_str().unwrap().to_owned();
        secrets.push(("the pipeline's token", pipeline.clone()));

        // The publisher's key signs the database package.
        let key = dir.path().join("publisher");
        let (ok, out) = controller_cli(&["keygen", "--out", s(&key)]).await;
        assert!(ok, "{out}");
        let secret_key = std::fs::read_to_string(key.with_extension("key")).unwrap();
        secrets.push(("the publisher's key", secret_key.trim().to_owned()));
        let public_key = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let package = build_package(dir.path(), &server).await;
        let (ok, out) = controller_cli(&[
            "package",
            "sign",
            "--key",
            s(&key.with_extension("key")),
            s(&package),
        ])
        .await;
        assert!(ok, "{out}");

        // The server's agent, with a database password file, enrolled with
        // a one-time token.
        let password = flotilla_proto::web::random_secret();
        secrets.push(("the database password", password.clone()));
        let password_file = dir.path().join("db-password");
        std::fs::write(&password_file, &password).unwrap();
        let folder = dir.path().join("shop").join("apps").join("database");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("version.txt"), "1.0.0\n").unwrap();
        let xml = format!(
            "<applications><application name=\"database\" kind=\"database\" path=\"{}\"/></applications>",
            folder.display()
        );
        let config = format!(
            "trusted_keys = [\"{}\"]\n[databases.database]\nengine = \"postgres\"\nurl = \"{}\"\npassword_file = {:?}\npg_bin_dir = {:?}\n",
            public_key.trim(),
            server.url("shop"),
            password_file.display().to_string(),
            server.bin.display().to_string()
        );
        let mut agent = Agent::launch_with(
            dir.path(),
            "acme",
            "shop",
            &controller.grpc_url,
            &xml,
            100,
            &config,
        )
        .await;
        agent.child.kill().await.unwrap();
        let enrollment: Value = flotilla_tests::http()
            .post(format!("{}/api/v1/enrollments", controller.http_url))
            .json(&json!({"server": "shop", "site": "acme"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = enrollment["token"].as_str().unwrap().to_owned();
        secrets.push(("the enrollment token", token.clone()));
        let enrolled = tokio::process::Command::new(binary("flotilla-agent"))
            .arg("--config")
            .arg(agent.data.join("agent.toml"))
            .args(["enroll", "--controller", &controller.http_url])
            .env("FLOTILLA_ENROLLMENT_TOKEN", &token)
            .args([
                "--ca-fingerprint",
                enrollment["ca_fingerprint"].as_str().unwrap(),
            ])
            .output()
            .await
            .unwrap();
        assert!(enrolled.status.success());
        let identity = std::fs::read_to_string(agent.data.join("identity/agent.pem")).unwrap();
        let agent_key: String = identity
            .split("-----BEGIN PRIVATE KEY-----")
            .nth(1)
            .unwrap()
            .lines()
            .find(|l| l.len() > 40)
            .unwrap()
            .to_owned();
        secrets.push(("the agent's private key", agent_key));
        agent.relaunch("flotilla-agent", &[]).await;

        // Published by the pipeline, rolled out by an operator.
        let (ok, published) = controller_cli(&[
            "release",
            "publish",
            "--server",
            &controller.http_url,
            "--ca",
            &ca_file(),
            "--token",
            &pipeline,
            "--version",
            "2026.12",
            s(&package),
        ])
        .await;
        assert!(ok, "{published}");
        controller
            .wait_for_server("shop", "2.0.0 pending", |s| {
                module(s, "database")["pending_version"] == "2.0.0"
            })
            .await;
        let (status, review) = controller
            .get("/api/v1/servers/shop/modules/database/database")
            .await;
        assert_eq!(status, 200, "{review}");
        let operator = controller.token_for("olga", "operator").await;
        secrets.push(("the operator's token", operator.clone()));
        let rollout: Value = anonymous()
            .post(format!("{}/api/v1/rollouts", controller.http_url))
            .bearer_auth(&operator)
            .json(&json!({"release": "2026.12"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = rollout["id"].as_i64().unwrap();
        let done = flotilla_tests::sites::wait_for_rollout(&controller, id, "succeeded", |r| {
            r["state"] == "succeeded"
        })
        .await;
        assert_eq!(done["state"], "succeeded");
        assert_eq!(
            server.psql("shop", "SELECT count(*) FROM flotilla_schema_history"),
            "3"
        );

        // Everything a person or a program could read.
        let mut seen: Vec<(String, String)> = vec![
            (
                "the controller's log".into(),
                std::fs::read_to_string(&controller.log).unwrap(),
            ),
            ("the agent's log".into(), agent.log()),
            ("the agent's status.xml".into(), agent.status_xml()),
            ("the agent's portal".into(), agent.portal().await),
            (
                "flotilla-agent enroll".into(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&enrolled.stdout),
                    String::from_utf8_lossy(&enrolled.stderr)
                ),
            ),
            ("release publish".into(), published),
        ];
        for path in [
            "/api/v1/sites",
            "/api/v1/servers",
            "/api/v1/servers/shop",
            "/api/v1/servers/shop/installs",
            "/api/v1/servers/shop/modules/database/database",
            "/api/v1/releases",
            "/api/v1/rollouts",
            &format!("/api/v1/rollouts/{id}"),
            "/api/v1/enrollments",
            "/api/v1/tokens",
            "/api/v1/accounts",
            "/api/v1/session",
            "/api/v1/audit?limit=100000",
            "/api/v1/audit/export",
            "/api/v1/openapi.json",
            "/",
            "/releases",
            "/rollouts",
            "/agents",
            "/audit",
            "/database",
            "/login",
        ] {
            let text = flotilla_tests::http()
                .get(format!("{}{path}", controller.http_url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            seen.push((path.to_owned(), text));
        }
        // The search reads real text: what is not secret is found.
        for (where_, text) in &seen {
            assert!(text.len() > 30, "{where_} is nearly empty: {text}");
        }
        assert!(
            seen[0].1.contains("agent enrolled") && seen[0].1.contains("rollout started"),
            "{}",
            seen[0].1
        );
        let mut leaks = Vec::new();
        for (secret_name, secret) in &secrets {
            assert!(
                secret.len() >= 16,
                "{secret_name} is too short to search for"
            );
            for (where_, text) in &seen {
                if text.contains(secret.as_str()) {
                    leaks.push(format!("{secret_name} in {where_}"));
                }
            }
        }
        assert!(leaks.is_empty(), "secrets found: {leaks:?}");
    }
}
