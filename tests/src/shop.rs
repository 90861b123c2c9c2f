//! The shop's release for the database tests: the `database` module on
//! PostgreSQL (the standard schema of 1.0.0 and three upgrade scripts to
//! 2.0.0) and the `ecommerce` site, built and signed by the publisher's
//! command line, and the servers that host them.

use std::path::{Path, PathBuf};

use flotilla_proto::database::Script;

use crate::postgres::Postgres;
use crate::{Agent, Controller, controller_cli};

/// The shop database's standard schema of 1.0.0, with a row of each.
pub const STANDARD_PG: &str = r#"
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    total numeric(12,2) NOT NULL DEFAULT 0,
    placed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE VIEW v_orders AS SELECT o.id, c.name, o.total FROM orders o JOIN customers c ON c.id = o.customer_id;
CREATE FUNCTION order_total(p_customer integer) RETURNS numeric LANGUAGE sql
    AS $$ SELECT COALESCE(sum(total), 0) FROM orders WHERE customer_id = p_customer $$;
CREATE PROCEDURE archive_orders(p_before timestamptz) LANGUAGE sql
    AS $$ DELETE FROM orders WHERE placed_at < p_before $$;
CREATE FUNCTION touch_order() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN NEW.placed_at := now(); RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch_order();
INSERT INTO customers (name, email) VALUES ('Ada', 'ada@example.com');
INSERT INTO orders (customer_id, total) VALUES (1, 42.50);
"#;

/// The upgrade scripts from 1.0.0 to 2.0.0, in order.
pub fn upgrade_scripts() -> Vec<Script> {
    vec![
        script(
            "001_loyalty.sql",
            "ALTER TABLE customers ADD COLUMN loyalty_points integer NOT NULL DEFAULT 0;\r\n",
        ),
        script(
            "002_view.sql",
            "CREATE OR REPLACE VIEW v_orders AS\n  SELECT o.id, c.name, o.total, c.loyalty_points\n  FROM orders o JOIN customers c ON c.id = o.customer_id;\n",
        ),
        script(
            "003_index.sql",
            "CREATE INDEX orders_placed_idx ON orders (placed_at);\n\
             CREATE TYPE invoice_state AS ENUM ('draft', 'sent', 'paid');\n\
             CREATE TABLE invoices (id serial PRIMARY KEY, order_id integer NOT NULL UNIQUE REFERENCES orders (id), state invoice_state NOT NULL DEFAULT 'draft');\n",
        ),
    ]
}

fn script(name: &str, sql: &str) -> Script {
    Script {
        name: name.into(),
        sql: sql.into(),
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `database-2.0.0.zip`, built by the publisher's command line: the
/// standard schemas computed on a scratch database of `server`.
pub async fn build_package(dir: &Path, server: &Postgres) -> PathBuf {
    let scripts = dir.join("upgrades");
    std::fs::create_dir_all(&scripts).unwrap();
    for script in upgrade_scripts() {
        std::fs::write(scripts.join(&script.name), &script.sql).unwrap();
    }
    let baseline = dir.join("standard-1.0.0.sql");
    std::fs::write(&baseline, STANDARD_PG).unwrap();
    let files = dir.join("dist");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("version.txt"), "2.0.0\n").unwrap();
    let out = dir.join("database-2.0.0.zip");
    let (ok, text) = controller_cli(&[
        "package",
        "build",
        "--module",
        "database",
        "--kind",
        "database",
        "--version",
        "2.0.0",
        "--from",
        s(&files),
        "--scripts",
        s(&scripts),
        "--engine",
        "postgres",
        "--baseline",
        s(&baseline),
        "--from-version",
        "1.0.0",
        "--scratch-url",
        &server.url("postgres"),
        "--out",
        s(&out),
    ])
    .await;
    assert!(ok, "{text}");
    out
}

/// Release 2026.12 of the shop: the database module (PostgreSQL, its
/// three upgrade scripts) and the ecommerce site, both 2.0.0, signed by
/// a publisher the agents trust.
#[derive(Debug)]
pub struct ShopRelease {
    dir: PathBuf,
    database: PathBuf,
    ecommerce: PathBuf,
    trusted: String,
}

impl ShopRelease {
    /// Builds both packages in `d`, signed with a new publisher key.
    pub async fn build(d: &Path, server: &Postgres) -> ShopRelease {
        let key = d.join("publisher");
        assert!(controller_cli(&["keygen", "--out", s(&key)]).await.0);
        let database = build_package(d, server).await;
        let (ok, text) = controller_cli(&[
            "package",
            "sign",
            "--key",
            s(&key.with_extension("key")),
            s(&database),
        ])
        .await;
        assert!(ok, "{text}");
        let web_files = d.join("web-dist");
        std::fs::create_dir_all(&web_files).unwrap();
        std::fs::write(web_files.join("version.txt"), "2.0.0\n").unwrap();
        let ecommerce = d.join("ecommerce-2.0.0.zip");
        let (ok, text) = controller_cli(&[
            "package",
            "build",
            "--module",
            "ecommerce",
            "--version",
            "2.0.0",
            "--from",
            s(&web_files),
            "--out",
            s(&ecommerce),
            "--key",
            s(&key.with_extension("key")),
        ])
        .await;
        assert!(ok, "{text}");
        let trusted = format!(
            "trusted_keys = [\"{}\"]",
            std::fs::read_to_string(key.with_extension("pub"))
                .unwrap()
                .trim()
        );
        ShopRelease {
            dir: d.to_owned(),
            database,
            ecommerce,
            trusted,
        }
    }

    /// A server of `site` whose database module (1.0.0) uses database
    /// `name` of `server`.
    pub async fn database_server(
        &self,
        controller: &Controller,
        server: &Postgres,
        site: &str,
        id: &str,
        name: &str,
    ) -> Agent {
        let module = self.dir.join(id).join("apps/database");
        std::fs::create_dir_all(&module).unwrap();
        std::fs::write(module.join("version.txt"), "1.0.0\n").unwrap();
        Agent::launch_with(
            &self.dir,
            site,
            id,
            &controller.grpc_url,
            &format!("<applications><application name=\"database\" kind=\"database\" path=\"{}\"/></applications>", module.display()),
            100,
            &format!(
                "{}\n[databases.database]\nengine = \"postgres\"\nurl = \"{}\"\npg_bin_dir = {:?}\n",
                self.trusted,
                server.url(name),
                server.bin.display().to_string()
            ),
        )
        .await
    }

    /// A server of `site` with the shop (ecommerce 1.0.0).
    pub async fn shop_server(&self, controller: &Controller, site: &str, id: &str) -> Agent {
        let shop = self.dir.join(id).join("apps/ecommerce");
        std::fs::create_dir_all(&shop).unwrap();
        std::fs::write(shop.join("version.txt"), "1.0.0\n").unwrap();
        Agent::launch_with(
            &self.dir,
            site,
            id,
            &controller.grpc_url,
            &format!("<applications><application name=\"ecommerce\" kind=\"web\" path=\"{}\"/></applications>", shop.display()),
            100,
            &self.trusted,
        )
        .await
    }

    /// Publishes both as release 2026.12, as a pipeline would.
    pub async fn publish(&self, controller: &Controller) {
        let (ok, text) = controller_cli(&[
            "release",
            "publish",
            "--server",
            &controller.http_url,
            "--ca",
            &crate::ca_file(),
            "--token",
            &controller.token_for("pipeline", "publisher").await,
            "--version",
            "2026.12",
            s(&self.database),
            s(&self.ecommerce),
        ])
        .await;
        assert!(ok, "{text}");
    }
}

/// An agent `name` whose `database` module (1.0.0) uses the database
/// `name` of `server`, with `package` pending (signed by the test
/// publisher).
pub async fn database_agent(
    dir: &Path,
    server: &Postgres,
    name: &str,
    package: &Path,
    controller_url: &str,
) -> Agent {
    let module = dir.join(name).join("apps").join("database");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(module.join("version.txt"), "1.0.0\n").unwrap();
    let xml = format!(
        "<applications><application name=\"database\" kind=\"database\" path=\"{}\"/></applications>",
        module.display()
    );
    let packages = dir.join(name).join("bin/updates/packages");
    std::fs::create_dir_all(&packages).unwrap();
    let pending = packages.join("database-2.0.0.zip");
    std::fs::copy(package, &pending).unwrap();
    crate::sign_beside(&pending);
    let config = format!(
        "{}\n[databases.database]\nengine = \"postgres\"\nurl = \"{}\"\npg_bin_dir = {:?}\n",
        crate::trusted_publisher(),
        server.url(name),
        server.bin.display().to_string()
    );
    Agent::launch_with(dir, "acme", name, controller_url, &xml, 100, &config).await
}
