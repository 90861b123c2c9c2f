//! The controller on PostgreSQL, beyond what running every end-to-end test
//! on it (`.ci/postgres-tests`) shows: both engines' schemas agree, and the
//! database URL's password never reaches what the controller prints.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use flotilla_tests::Controller;
use flotilla_tests::postgres::Postgres;
use sqlx::Connection;

/// `(table, column, kind, not null)` of every column a controller's
/// migrations made, with SQLite's and PostgreSQL's types named alike.
type Columns = BTreeSet<(String, String, &'static str, bool)>;

fn kind(declared: &str) -> &'static str {
    match declared.to_ascii_lowercase().as_str() {
        "integer" | "bigint" => "integer",
        "boolean" => "flag",
        "text" => "text",
        "timestamp with time zone" => "time",
        other => panic!("a column of type {other}: name it here"),
    }
}

async fn sqlite_columns(file: &std::path::Path) -> (Columns, i64) {
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite:{}", file.display()))
        .await
        .unwrap();
    let rows: Vec<(String, String, String, bool, i64)> = sqlx::query_as(
        "SELECT m.name, p.name, p.type, p.\"notnull\", p.pk FROM sqlite_master m \
         JOIN pragma_table_info(m.name) p WHERE m.type = 'table' \
         AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    // A TEXT or INTEGER column's type on SQLite says nothing of times and
    // flags: those are named by the PostgreSQL side, and compared by name.
    let columns = rows
        .into_iter()
        .map(|(table, column, declared, not_null, pk)| {
            (table, column, kind(&declared), not_null || pk > 0)
        })
        .collect();
    let version: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut db)
        .await
        .unwrap();
    (columns, version)
}

async fn postgres_columns(url: &str) -> (Columns, i64) {
    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let columns = rows
        .into_iter()
        .map(|(table, column, declared, nullable)| {
            // Times and flags are text and integers on SQLite; which
            // columns are which is told by their names.
            let kind = kind(&declared);
            let named = if column.ends_with("_at")
                || ["planned_start", "planned_end", "not_after"].contains(&column.as_str())
            {
                "time"
            } else if ["online", "rolled_back"].contains(&column.as_str()) {
                "flag"
            } else {
                kind
            };
            assert_eq!(kind, named, "{table}.{column} is {declared} on PostgreSQL");
            let kind = match kind {
                "time" => "text",
                "flag" => "integer",
                other => other,
            };
            (table, column, kind, nullable == "NO")
        })
        .collect();
    let version: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut db)
        .await
        .unwrap();
    (columns, version)
}

#[tokio::test]
async fn both_engines_have_the_same_tables_columns_and_schema_version() {
    let postgres = Postgres::start();
    let url = postgres.create_database("fleet");
    let (sqlite_dir, postgres_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = sqlite_dir.path().join("controller.db");
    let packages = postgres_dir.path().join("packages");
    let tls = postgres_dir.path().join("tls");
    flotilla_tests::tls::ca().seed(&tls);
    let mut on_sqlite =
        Controller::start_with_args(sqlite_dir.path(), &["--db", file.to_str().unwrap()]).await;
    let mut on_postgres = Controller::start_with_args(
        postgres_dir.path(),
        &[
            "--db",
            &url,
            "--packages",
            packages.to_str().unwrap(),
            "--tls-dir",
            tls.to_str().unwrap(),
        ],
    )
    .await;
    on_sqlite.kill().await;
    on_postgres.kill().await;

    let (sqlite, sqlite_version) = sqlite_columns(&file).await;
    let (postgres, postgres_version) = postgres_columns(&url).await;
    assert!(sqlite.len() > 100, "{sqlite:?}");
    let only_sqlite: Vec<_> = sqlite.difference(&postgres).collect();
    let only_postgres: Vec<_> = postgres.difference(&sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "the schemas differ: only on SQLite {only_sqlite:?}, only on PostgreSQL {only_postgres:?} \
         (a migration in migrations/sqlite needs its twin in migrations/postgres)"
    );
    assert_eq!(
        sqlite_version, postgres_version,
        "each engine's newest migration has the same version"
    );
}

#[tokio::test]
async fn a_postgres_password_never_reaches_what_the_controller_prints() {
    let postgres = Postgres::start();
    let url = postgres.create_database("fleet");
    let secret = "s3cret-not-to-be-printed";
    let with_password = url.replace("flotilla@", &format!("flotilla:{secret}@"));
    let dir = tempfile::tempdir().unwrap();
    let packages = dir.path().join("packages");
    let tls = dir.path().join("tls");
    flotilla_tests::tls::ca().seed(&tls);
    let common = [
        "--packages",
        packages.to_str().unwrap(),
        "--tls-dir",
        tls.to_str().unwrap(),
    ];

    // Serving: the log names the database without the password.
    let mut args = vec!["--db", with_password.as_str()];
    args.extend(common);
    let mut controller = Controller::start_with_args(dir.path(), &args).await;
    controller.kill().await;
    let log = std::fs::read_to_string(&controller.log).unwrap();
    assert!(log.contains("flotilla:***@127.0.0.1"), "{log}");
    assert!(!log.contains(secret), "{log}");

    // Refused: the error names the database, not the password.
    let missing = with_password.replace("/fleet", "/no_such_fleet");
    let listen = [
        "--grpc-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ];
    let mut args = vec!["--db", missing.as_str()];
    args.extend(common);
    args.extend(listen);
    let (ok, said) = flotilla_tests::controller_cli(&args).await;
    assert!(!ok);
    assert!(
        said.contains("cannot open the controller database postgres://flotilla:***@127.0.0.1")
            && said.contains("no_such_fleet"),
        "{said}"
    );
    assert!(!said.contains(secret), "{said}");

    // With no packages folder given there is nothing to put it beside.
    let mut args = vec!["--db", url.as_str(), "--tls-dir", tls.to_str().unwrap()];
    args.extend(listen);
    let (ok, said) = flotilla_tests::controller_cli(&args).await;
    assert!(!ok);
    assert!(
        said.contains("with a PostgreSQL database, give --packages"),
        "{said}"
    );
}
