//! Every button of the dashboard, pressed in a real headless Chromium, and
//! what the person who pressed it then sees. The rollout page's Pause,
//! Resume, Exclude, Cancel, Roll back site, Start anyway and Retry failed
//! steer two rollouts of three sites; a database module's script is marked
//! applied by hand, reached from the fleet's review link, and a rolled-back
//! site's upgraded database is kept; the fleet is filtered, the header's
//! links followed, the audit trail exported, and the operator signs out
//! and back in.
//!
//! The buttons other tests already press: Install and Doctor
//! (`dashboard.rs`, `doctor.rs`), the fleet's pages and search
//! (`fleet.rs`), Preview plan and Start rollout, Withdraw
//! (`dashboard.rs`), Create a token and Revoke (`enrollment.rs`), the
//! audit's Filter (`operators.rs`), Run this script and Restore the
//! backups (`database.rs`), Sign in (every browser test).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use flotilla_tests::browser::Browser;
use flotilla_tests::postgres::Postgres;
use flotilla_tests::shop::{STANDARD_PG, ShopRelease, upgrade_scripts};
use flotilla_tests::sites::{
    Publisher, ROLLOUT_PATIENCE, ServerSpec, assert_logged, hook, launch_server, post, site, steps,
    wait_for_downloads, wait_for_rollout,
};
use flotilla_tests::{Agent, Controller, PATIENCE, module, version_of, wait_until, wait_up_to};
use serde_json::{Value, json};

/// Presses the element `selector` once the page shows it enabled, as a
/// person clicks it, answering yes to the question it asks first; returns
/// that question.
async fn press(browser: &Browser, selector: &str) -> Option<String> {
    let script = format!(
        "const e = document.querySelector({selector:?}); \
         if (!e || e.disabled) return false; \
         window.asked = null; \
         window.confirm = (question) => {{ window.asked = question; return true; }}; \
         e.click(); return true;"
    );
    wait_until(&format!("{selector} to press"), async || {
        let pressed = browser.eval(&script).await;
        (pressed == true).then_some(()).ok_or(pressed.to_string())
    })
    .await;
    browser
        .eval("return window.asked")
        .await
        .as_str()
        .map(str::to_owned)
}

/// Waits until `script`'s value satisfies `condition`; returns the value.
async fn wait_for(
    browser: &Browser,
    what: &str,
    script: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    watch(browser, PATIENCE, what, script, condition).await
}

/// [`wait_for`] with its own patience.
async fn watch(
    browser: &Browser,
    patience: Duration,
    what: &str,
    script: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    wait_up_to(patience, what, async || {
        let value = browser.eval(script).await;
        if condition(&value) {
            Ok(value)
        } else {
            Err(value.to_string())
        }
    })
    .await
}

/// What the rollout page shows of its rollout: its id, state and reason,
/// the buttons above its sites, and the state of each site and each step
/// (`server/module`).
const ROLLOUT_SHOWN: &str = r"
    const r = document.getElementById('rollout');
    const state = r && !r.hidden && r.querySelector('#rollout-state');
    if (!state) return null;
    const each = (selector, key, value) =>
      Object.fromEntries([...r.querySelectorAll(selector)].map((e) => [key(e), value(e)]));
    return {
      id: Number(r.dataset.rollout),
      state: state.dataset.state,
      reason: r.querySelector('#rollout-reason').textContent,
      buttons: [...r.querySelectorAll('.actions button')].map((b) => b.textContent),
      sites: each('section.rollout-site', (s) => s.dataset.site, (s) => s.querySelector('.site-state').dataset.state),
      steps: each('tr.step', (t) => `${t.dataset.server}/${t.dataset.module}`, (t) => t.querySelector('.step-state').dataset.state),
    };";

/// Waits until the rollout page shows its rollout as `condition` wants,
/// with a rollout's patience.
async fn wait_for_rollout_page(
    browser: &Browser,
    what: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    watch(browser, ROLLOUT_PATIENCE, what, ROLLOUT_SHOWN, condition).await
}

/// A module's version on the server's disk.
fn on_disk(agent: &Agent, module: &str) -> String {
    std::fs::read_to_string(agent.data.join("apps").join(module).join("version.txt"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Waits until the controller shows `module` of `agent` at `version`, and
/// checks the server's disk agrees.
async fn wait_for_version(controller: &Controller, agent: &Agent, module: &str, version: &str) {
    controller
        .wait_for_server(&agent.id, &format!("{module} at {version}"), |s| {
            version_of(s, module) == Some(version)
        })
        .await;
    assert_eq!(on_disk(agent, module), version, "{module} on {}", agent.id);
}

#[tokio::test]
async fn the_rollout_pages_buttons_pause_resume_exclude_cancel_roll_back_override_and_retry() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let c = &controller;
    let publisher = Publisher::default();
    let servers = dir.path().join("servers");
    let launch = async |site: &str, id: &str, modules: &'static [&'static str]| {
        launch_server(&servers, c, &publisher, site, ServerSpec { id, modules }).await
    };
    let alpha = launch("alpha", "alpha-web", &["ecommerce"]).await;
    let bravo = launch("bravo", "bravo-web", &["ecommerce"]).await;
    let charlie = launch("charlie", "charlie-web", &["integration", "ecommerce"]).await;
    publisher
        .publish(
            c,
            dir.path(),
            "2026.12",
            "2.0.0",
            &["integration", "ecommerce"],
        )
        .await;
    wait_for_downloads(
        c,
        &[
            (&alpha, &["ecommerce"]),
            (&bravo, &["ecommerce"]),
            (&charlie, &["integration", "ecommerce"]),
        ],
        "2.0.0",
    )
    .await;
    // Alpha's install holds in PREINSTALL until the test lets it go: the
    // rollout is running for as long as the test needs.
    let go = dir.path().join("go");
    hook(
        &alpha,
        "PREINSTALL",
        "ecommerce",
        &format!(
            "echo 'holding the install'\nwhile [ ! -e {:?} ]; do sleep 0.1; done",
            go.display().to_string()
        ),
    );

    let browser = Browser::start().await;
    browser.sign_in(c).await;
    browser.goto(&format!("{}/rollouts", c.http_url)).await;
    wait_for(
        &browser,
        "the release in the form",
        "return document.getElementById('release').value",
        |v| v == "2026.12",
    )
    .await;

    // One site a wave, a manual gate between waves: planned, then started.
    browser
        .eval(
            "document.getElementById('batch-size').value = '1'; \
             document.getElementById('manual-gate').checked = true; return null",
        )
        .await;
    press(&browser, "#preview").await;
    let waves = wait_for(
        &browser,
        "the plan, a site a wave",
        "return [...document.querySelectorAll('#plan section.plan-site')].map((s) => s.dataset.site + ' ' + s.dataset.wave)",
        |v| v.as_array().is_some_and(|a| a.len() == 3),
    )
    .await;
    assert_eq!(waves, json!(["alpha 1", "bravo 2", "charlie 3"]));
    press(&browser, "#start").await;
    let shown = wait_for_rollout_page(&browser, "the new rollout, alpha running", |r| {
        r["state"] == "running" && r["sites"]["alpha"] == "running"
    })
    .await;
    let first = shown["id"].as_i64().unwrap();
    wait_for(
        &browser,
        "alpha's hook saying it holds, live",
        "const p = document.querySelector(\"pre.output[data-server='alpha-web'][data-module='ecommerce']\"); return p && p.textContent",
        |v| v.as_str().is_some_and(|t| t.contains("holding the install")),
    )
    .await;

    // Pause: nothing new starts; the page says who paused it.
    assert_eq!(
        press(&browser, "#pause").await,
        None,
        "pausing asks nothing"
    );
    let paused =
        wait_for_rollout_page(&browser, "paused by admin", |r| r["state"] == "paused").await;
    assert_eq!(paused["reason"], "paused by admin");
    assert_eq!(paused["buttons"], json!(["Resume", "Cancel"]), "{paused}");
    let (_, rollout) = c.get(&format!("/api/v1/rollouts/{first}")).await;
    assert_eq!(rollout["state"], "paused", "{rollout}");

    // Resume, then let alpha's install finish: the gate stops before bravo.
    press(&browser, "#resume").await;
    let resumed =
        wait_for_rollout_page(&browser, "running again", |r| r["state"] == "running").await;
    assert_eq!(resumed["buttons"], json!(["Pause", "Cancel"]), "{resumed}");
    std::fs::write(&go, "").unwrap();
    let gated = wait_for_rollout_page(&browser, "the gate before wave 2", |r| {
        r["state"] == "paused" && r["sites"]["alpha"] == "succeeded"
    })
    .await;
    assert_eq!(gated["reason"], "wave 2 is ready; resume to start it");
    wait_for_version(c, &alpha, "ecommerce", "2.0.0").await;

    // Exclude bravo's server, then open the gate: bravo is left as it was.
    let asked = press(&browser, "button[data-exclude='bravo-web']").await;
    assert!(
        asked.as_deref().is_some_and(|q| q.contains("bravo-web")),
        "{asked:?}"
    );
    wait_for_rollout_page(&browser, "bravo-web excluded", |r| {
        r["steps"]["bravo-web/ecommerce"] == "excluded"
    })
    .await;
    press(&browser, "#resume").await;
    let gated = wait_for_rollout_page(&browser, "the gate before wave 3", |r| {
        r["state"] == "paused" && r["reason"] == "wave 3 is ready; resume to start it"
    })
    .await;
    assert_eq!(gated["sites"]["bravo"], "succeeded", "{gated}");
    assert_eq!(gated["steps"]["bravo-web/ecommerce"], "excluded", "{gated}");
    let (_, installs) = c.get("/api/v1/servers/bravo-web/installs").await;
    assert_eq!(installs, json!([]), "nothing was installed on bravo-web");
    assert_eq!(on_disk(&bravo, "ecommerce"), "1.0.0");

    // Cancel: charlie never starts, and nothing more can be asked.
    let asked = press(&browser, "#cancel").await;
    assert!(
        asked
            .as_deref()
            .is_some_and(|q| q.contains(&format!("Cancel rollout {first}"))),
        "{asked:?}"
    );
    let cancelled =
        wait_for_rollout_page(&browser, "cancelled", |r| r["state"] == "cancelled").await;
    assert_eq!(cancelled["sites"]["charlie"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["buttons"], json!([]), "{cancelled}");
    assert_eq!(cancelled["reason"], "cancelled by admin");

    // Roll back alpha, which had updated: back to 1.0.0.
    let asked = press(&browser, "button[data-rollback='alpha']").await;
    assert!(
        asked
            .as_deref()
            .is_some_and(|q| q.contains("Roll site alpha back")),
        "{asked:?}"
    );
    wait_for_rollout_page(&browser, "alpha rolled back", |r| {
        r["sites"]["alpha"] == "rolled_back"
    })
    .await;
    wait_for_version(c, &alpha, "ecommerce", "1.0.0").await;
    let over = wait_for_rollout(c, first, "over again", |r| !r["finished_at"].is_null()).await;
    assert_eq!(over["state"], "cancelled");
    assert_logged(
        &over,
        &[
            ("admin", "created"),
            ("admin", "paused"),
            ("admin", "resumed"),
            ("flotilla", "gate"),
            ("admin", "excluded a server"),
            ("admin", "cancelled"),
            ("admin", "rolled a site back"),
        ],
    );

    // A second rollout, of bravo and charlie, started by a pipeline: bravo
    // has a hook this server cannot run (its preflight fails, nothing
    // touched), charlie's shop fails after its integration updated (the
    // site stops for an operator).
    let scripts = bravo.data.join("bin/updates/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let unrunnable = scripts.join("PREINSTALL_ecommerce.bat");
    std::fs::write(&unrunnable, "net stop shop\r\n").unwrap();
    let failing = hook(
        &charlie,
        "PREINSTALL",
        "ecommerce",
        "echo 'the shop cannot reach its payment provider' >&2\nexit 1",
    );
    let (status, created) = post(
        c,
        "/api/v1/rollouts",
        &json!({"release": "2026.12", "sites": ["bravo", "charlie"],
                "strategy": {"failure": {"site": "stop", "retries": 0, "max_failed_sites": 1}}}),
        "carol",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let second = created["id"].as_i64().unwrap();
    // Chosen in the list of rollouts.
    press(&browser, &format!("#rollouts tr[data-rollout='{second}']")).await;
    let stopped = wait_for_rollout_page(&browser, "bravo held back, charlie stopped", |r| {
        r["id"] == second
            && r["sites"]["bravo"] == "preflight_failed"
            && r["sites"]["charlie"] == "failed"
    })
    .await;
    assert_eq!(stopped["state"], "running", "{stopped}");
    assert_eq!(
        stopped["steps"]["charlie-web/integration"], "succeeded",
        "{stopped}"
    );
    let why = browser
        .text_of(
            "bravo-web's failed preflight",
            "section.rollout-site[data-site='bravo'] li.preflight-server[data-server='bravo-web'][data-failed='true']",
        )
        .await;
    assert!(why.contains("this server cannot run"), "{why}");
    wait_for_version(c, &charlie, "integration", "2.0.0").await;

    // Bravo's hook is rewritten on the server; the operator starts the
    // site at once rather than wait for the next check.
    std::fs::remove_file(&unrunnable).unwrap();
    let asked = press(&browser, "button[data-override='bravo']").await;
    assert!(
        asked
            .as_deref()
            .is_some_and(|q| q.contains("Start site bravo")),
        "{asked:?}"
    );
    wait_for_rollout_page(&browser, "bravo updated", |r| {
        r["sites"]["bravo"] == "succeeded"
    })
    .await;
    wait_for_version(c, &bravo, "ecommerce", "2.0.0").await;
    let (_, rollout) = c.get(&format!("/api/v1/rollouts/{second}")).await;
    assert_eq!(site(&rollout, "bravo")["preflight_override_by"], "admin");

    // Charlie rolled back from its page: its integration goes back.
    let asked = press(&browser, "button[data-rollback='charlie']").await;
    assert!(
        asked
            .as_deref()
            .is_some_and(|q| q.contains("Roll site charlie back")),
        "{asked:?}"
    );
    wait_for_rollout_page(&browser, "charlie rolled back", |r| {
        r["sites"]["charlie"] == "rolled_back"
    })
    .await;
    wait_for_version(c, &charlie, "integration", "1.0.0").await;

    // The shop's hook fixed, Retry failed takes charlie to the end.
    std::fs::remove_file(failing).unwrap();
    let shown = wait_for_rollout_page(&browser, "Retry failed offered", |r| {
        r["buttons"]
            .as_array()
            .is_some_and(|b| b.contains(&json!("Retry failed")))
    })
    .await;
    assert_eq!(shown["sites"]["charlie"], "rolled_back");
    assert_eq!(
        press(&browser, "#retry").await,
        None,
        "retrying asks nothing"
    );
    let done = wait_for_rollout_page(&browser, "the rollout succeeded", |r| {
        r["state"] == "succeeded"
    })
    .await;
    assert_eq!(
        done["sites"],
        json!({"bravo": "succeeded", "charlie": "succeeded"})
    );
    wait_for_version(c, &charlie, "integration", "2.0.0").await;
    wait_for_version(c, &charlie, "ecommerce", "2.0.0").await;
    let (_, rollout) = c.get(&format!("/api/v1/rollouts/{second}")).await;
    assert_logged(
        &rollout,
        &[
            ("carol", "created"),
            ("flotilla", "preflight_failed"),
            ("admin", "preflight_overridden"),
            ("flotilla", "site_failed"),
            ("admin", "rolled a site back"),
            ("admin", "retried"),
        ],
    );
    assert!(
        steps(&rollout, "charlie")
            .iter()
            .all(|s| s["state"] == "succeeded"),
        "{rollout}"
    );
    browser.quit().await;
}

/// A customized shop database reached from the fleet's review link, its
/// first script applied by hand and marked so; and a site whose shop failed
/// after its database upgraded, whose database the operator keeps.
#[tokio::test]
async fn a_script_is_marked_applied_and_a_rolled_back_sites_database_kept_from_the_dashboard() {
    let server = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let controller = Controller::start(d).await;
    let c = &controller;
    let release = ShopRelease::build(d, &server).await;
    server.create_database("db01");
    server.psql("db01", STANDARD_PG);
    server.create_database("custom");
    server.psql("custom", STANDARD_PG);
    // The customer's own column in the standard view.
    server.psql(
        "custom",
        "CREATE OR REPLACE VIEW v_orders AS SELECT o.id, c.name, o.total, o.placed_at FROM orders o JOIN customers c ON c.id = o.customer_id",
    );
    let _db = release
        .database_server(c, &server, "acme", "db-01", "db01")
        .await;
    let web = release.shop_server(c, "acme", "web-01").await;
    hook(
        &web,
        "POSTINSTALL",
        "ecommerce",
        "echo 'the shop cannot reach its payment provider' >&2; exit 1",
    );
    let _custom = release
        .database_server(c, &server, "zulu", "custom-db", "custom")
        .await;
    release.publish(c).await;
    for (id, m) in [
        ("db-01", "database"),
        ("web-01", "ecommerce"),
        ("custom-db", "database"),
    ] {
        c.wait_for_server(id, "2.0.0 pending", |s| {
            module(s, m)["pending_version"] == "2.0.0"
        })
        .await;
    }
    let (status, created) = post(
        c,
        "/api/v1/rollouts",
        &json!({"release": "2026.12", "sites": ["acme"],
                "strategy": {"failure": {"retries": 0, "max_failed_sites": 1}}}),
        "alice",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();

    // From the fleet, the review of custom-db's database.
    let browser = Browser::start().await;
    browser.sign_in(c).await;
    browser.goto(&format!("{}/", c.http_url)).await;
    press(
        &browser,
        "tr[data-server='custom-db'] td[data-module='database'] a.review",
    )
    .await;
    let review = wait_for(
        &browser,
        "custom-db's review",
        "const v = document.getElementById('verdict'); const n = document.querySelector('article.script.next'); \
         return [location.pathname + location.search, v && v.dataset.standard, n && n.dataset.script]",
        |v| v[1] == "false" && v[2].is_string(),
    )
    .await;
    assert_eq!(
        review,
        json!([
            "/database?server=custom-db&module=database",
            "false",
            "001_loyalty.sql"
        ])
    );

    // The difference opened to compare both definitions.
    let drift = "#drift details.drift-item[data-change='modified'][data-kind='view']";
    press(&browser, &format!("{drift} summary")).await;
    let opened = browser
        .eval(&format!(
            "const d = document.querySelector({drift:?}); \
             return [d.open, d.querySelector('.drift-compare .actual pre').offsetHeight > 0]"
        ))
        .await;
    assert_eq!(opened, json!([true, true]), "the definitions shown");

    // The DBA ran the first script by hand; the operator marks it applied.
    server.psql("custom", &upgrade_scripts()[0].sql);
    let asked = press(&browser, "button.mark[data-script='001_loyalty.sql']").await;
    assert!(
        asked
            .as_deref()
            .is_some_and(|q| q.contains("Mark 001_loyalty.sql as applied by hand")),
        "{asked:?}"
    );
    let marked = wait_for(
        &browser,
        "001 marked applied on the page",
        "const a = document.querySelector(\"article.script[data-script='001_loyalty.sql']\"); \
         const n = document.querySelector('article.script.next'); \
         const h = document.querySelector(\"#history tr[data-script='001_loyalty.sql']\"); \
         return [a.dataset.state, (a.querySelector('.script-by') || {}).textContent || null, \
                 n && n.dataset.script, h && h.dataset.outcome, h && h.children[3].textContent]",
        |v| v[0] == "marked applied" && v[3].is_string(),
    )
    .await;
    assert!(
        marked[1]
            .as_str()
            .is_some_and(|t| t.starts_with("by admin")),
        "{marked}"
    );
    assert_eq!(marked[2], "002_view.sql", "the next script: {marked}");
    assert_eq!(marked[3], "marked applied");
    assert_eq!(marked[4], "admin");
    let still = browser
        .eval(&format!("return document.querySelector({drift:?}).open"))
        .await;
    assert_eq!(
        still, true,
        "the opened difference stays open as the page refreshes"
    );
    let (_, review) = c
        .get("/api/v1/servers/custom-db/modules/database/database")
        .await;
    assert_eq!(review["scripts"][0]["state"], "marked applied", "{review}");
    assert_eq!(review["scripts"][1]["state"], "pending", "{review}");

    // Acme's shop failed after its database upgraded; the files are back,
    // the application goes on writing.
    wait_for_rollout(c, id, "acme waiting for a database decision", |r| {
        site(r, "acme")["state"] == "database_decision"
    })
    .await;
    server.psql(
        "db01",
        "INSERT INTO orders (customer_id, total) VALUES (1, 10), (1, 20)",
    );
    browser.goto(&format!("{}/rollouts#{id}", c.http_url)).await;
    let asked = press(&browser, "button[data-database='keep'][data-site='acme']").await;
    assert!(
        asked
            .as_deref()
            .is_some_and(|q| q.contains("Keep the databases of site acme at the new version")),
        "{asked:?}"
    );
    let kept = wait_for_rollout_page(&browser, "acme rolled back, its database kept", |r| {
        r["sites"]["acme"] == "rolled_back"
    })
    .await;
    assert_eq!(kept["steps"]["db-01/database"], "rolled_back", "{kept}");
    let message = browser
        .text_of(
            "the database step's message",
            "tr.step[data-server='db-01'][data-module='database'] .message",
        )
        .await;
    assert!(
        message.contains("its database kept at 2.0.0, as admin decided"),
        "{message}"
    );
    browser.quit().await;
    // Kept: the upgraded schema and what was written since.
    assert_eq!(
        server.psql("db01", "SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'loyalty_points'"),
        "1"
    );
    assert_eq!(server.psql("db01", "SELECT count(*) FROM orders"), "3");
    let done = wait_for_rollout(c, id, "over", |r| !r["finished_at"].is_null()).await;
    assert_logged(&done, &[("admin", "database_kept")]);
}

/// The fleet narrowed by module, version and problems; every link of the
/// header; the audit trail filtered and exported as the page shows it;
/// signing out, and back in where the operator was going.
#[tokio::test]
async fn the_fleet_filters_the_header_links_the_audit_export_and_signing_out_and_in() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let c = &controller;
    let _web = Agent::start(
        dir.path(),
        "acme-paris",
        "acme-web-01",
        &c.grpc_url,
        &[
            ("ecommerce", "web", "5.8.0"),
            ("phygitalapi", "web", "2.1.3"),
        ],
    )
    .await;
    let _db = Agent::start(
        dir.path(),
        "acme-paris",
        "acme-db-01",
        &c.grpc_url,
        &[("database", "database", "5.8.0")],
    )
    .await;
    let lyon = Agent::start(
        dir.path(),
        "bravo-lyon",
        "bravo-web-01",
        &c.grpc_url,
        &[("ecommerce", "web", "5.9.0")],
    )
    .await;
    // A hook whose name runs nothing: a problem of bravo-web-01.
    hook(&lyon, "PREINSTAL", "ecommerce", "exit 0");
    c.wait_for_server("bravo-web-01", "its hook's problem", |s| {
        s["problems"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    c.wait_for_server("acme-db-01", "online", |s| s["online"] == true)
        .await;
    c.wait_for_server("acme-web-01", "online", |s| s["online"] == true)
        .await;

    let browser = Browser::start().await;
    browser.sign_in(c).await;
    browser.goto(&format!("{}/", c.http_url)).await;
    let listed = "return [...document.querySelectorAll('#sites tr[data-server]')].map((r) => r.dataset.server)";
    let wait_for_list = async |what: &str, expected: Value| {
        wait_for(&browser, what, listed, |v| *v == expected).await;
    };
    wait_for_list(
        "the whole fleet",
        json!(["acme-db-01", "acme-web-01", "bravo-web-01"]),
    )
    .await;
    let type_in = async |id: &str, text: &str| {
        browser
            .eval(&format!(
                "const e = document.getElementById({id:?}); e.value = {text:?}; \
                 e.dispatchEvent(new Event('input')); return null"
            ))
            .await;
    };
    type_in("filter-module", "ecommerce").await;
    wait_for_list(
        "the servers with ecommerce",
        json!(["acme-web-01", "bravo-web-01"]),
    )
    .await;
    type_in("filter-version", "5.8.0").await;
    wait_for_list("ecommerce at 5.8.0", json!(["acme-web-01"])).await;
    type_in("filter-version", "9.9.9").await;
    wait_for(
        &browser,
        "no server at 9.9.9",
        "return document.getElementById('sites').textContent",
        |v| v == "No server matches these filters.",
    )
    .await;
    type_in("filter-module", "").await;
    type_in("filter-version", "").await;
    wait_for_list(
        "the whole fleet again",
        json!(["acme-db-01", "acme-web-01", "bravo-web-01"]),
    )
    .await;
    press(&browser, "#filter-problems").await;
    wait_for_list("the servers with problems", json!(["bravo-web-01"])).await;
    let problem = browser
        .text_of(
            "bravo-web-01's problem",
            "tr[data-problems-of='bravo-web-01'] .problem-line",
        )
        .await;
    assert!(problem.contains("PREINSTAL_ecommerce"), "{problem}");

    // Every link of the header, each to its page, marked current there.
    for (path, label) in [
        ("/releases", "Releases"),
        ("/rollouts", "Rollouts"),
        ("/agents", "Agents"),
        ("/", "Fleet"),
        ("/audit", "Audit"),
    ] {
        press(&browser, &format!("nav.who a.nav[href='{path}']")).await;
        wait_for(
            &browser,
            &format!("the {label} page"),
            "const current = document.querySelector('nav.who a.nav.current'); \
             return [location.pathname, document.title, current && current.textContent]",
            |v| *v == json!([path, format!("Flotilla · {label}"), label]),
        )
        .await;
    }

    // The audit trail, filtered, then exported as filtered.
    c.token_for("olga", "viewer").await;
    c.token_for("victor", "viewer").await;
    browser
        .eval("document.getElementById('action').value = 'tokens'; return null")
        .await;
    press(&browser, "#filter button[type='submit']").await;
    let rows = wait_for(
        &browser,
        "the token entries alone",
        "return [...document.querySelectorAll('#trail tbody tr')].map((r) => r.children[2].textContent)",
        // Two rows were there before the filter too (the sign-in, the
        // harness's account): the filter's are the tokens'.
        |v| {
            v.as_array()
                .is_some_and(|a| a.len() == 2 && a.iter().all(|r| r.to_string().contains("tokens")))
        },
    )
    .await;
    assert_eq!(
        rows,
        json!(["POST /api/v1/tokens", "POST /api/v1/tokens"]),
        "{rows}"
    );
    let downloads = tempfile::tempdir().unwrap();
    browser.save_downloads_in(downloads.path()).await;
    press(&browser, "#export").await;
    let exported = wait_until("the export downloaded", async || {
        let files: Vec<_> = std::fs::read_dir(downloads.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        match files.as_slice() {
            [file] if file.extension().is_none_or(|e| e != "crdownload") => {
                Ok(std::fs::read_to_string(file).unwrap())
            }
            _ => Err(format!("{files:?}")),
        }
    })
    .await;
    let lines: Vec<Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["POST /api/v1/tokens", "POST /api/v1/tokens"]);
    let (_, everything) = c.get("/api/v1/audit").await;
    assert!(
        everything.as_array().unwrap().len() > lines.len(),
        "the trail holds more than the export: {everything}"
    );

    // Signing out: the sign-in page, and the API no longer answers.
    press(&browser, "#sign-out").await;
    wait_for(
        &browser,
        "the sign-in page",
        "return location.pathname",
        |v| v == "/login",
    )
    .await;
    let status = browser
        .eval("return fetch('/api/v1/session').then((r) => r.status)")
        .await;
    assert_eq!(status, 401);
    // A page asked for now leads to signing in first, then to it.
    browser.goto(&format!("{}/rollouts", c.http_url)).await;
    wait_for(
        &browser,
        "the sign-in page, with the page asked",
        "return location.pathname + location.search",
        |v| v == "/login?next=%2Frollouts",
    )
    .await;
    let sign_in = |password: &str| {
        format!(
            "document.getElementById('name').value = 'admin'; \
             document.getElementById('password').value = {password:?}; return null"
        )
    };
    browser.eval(&sign_in("not the password")).await;
    press(&browser, "#submit").await;
    let problem = browser
        .text_of("the refusal", "#problem:not([hidden])")
        .await;
    assert!(!problem.is_empty(), "the page says why");
    assert_eq!(browser.eval("return location.pathname").await, "/login");
    browser
        .eval(&sign_in(c.admin_password.as_deref().unwrap()))
        .await;
    press(&browser, "#submit").await;
    wait_for(
        &browser,
        "the rollouts page, signed in",
        "const who = document.getElementById('signed-in'); return [location.pathname, who && who.textContent]",
        |v| v[0] == "/rollouts" && v[1].is_string(),
    )
    .await;
    browser.quit().await;
}
