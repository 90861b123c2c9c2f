//! The dashboard in a real headless Chromium: it shows the fleet, and follows
//! changes live without a reload.

#![allow(clippy::unwrap_used)]

use flotilla_tests::browser::Browser;
use flotilla_tests::{Agent, Controller, wait_until};
use serde_json::Value;

/// The text of the matrix cell for `module` on `server`, or null.
const CELL: &str = r#"
    const cell = document.querySelector(`tr[data-server="${arguments[0]}"] td[data-module="${arguments[1]}"]`);
    return cell ? cell.textContent : null;"#;

async fn cell(browser: &Browser, server: &str, module: &str) -> Value {
    browser
        .eval(&format!(
            "return (function() {{ {} }}).apply(null, {})",
            CELL,
            serde_json::json!([server, module])
        ))
        .await
}

async fn wait_for_cell(browser: &Browser, server: &str, module: &str, expected: &str) {
    wait_until(
        &format!("the dashboard to show {module} {expected} on {server}"),
        async || {
            let text = cell(browser, server, module).await;
            (text == expected).then_some(()).ok_or(text.to_string())
        },
    )
    .await;
}

#[tokio::test]
async fn the_dashboard_shows_the_fleet_and_follows_it_live() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let web = Agent::start(
        dir.path(),
        "acme-paris",
        "acme-web-01",
        &controller.grpc_url,
        &[
            ("ecommerce", "web", "5.8.0"),
            ("phygitalapi", "web", "2.1.3"),
        ],
    )
    .await;
    let mut db = Agent::start(
        dir.path(),
        "acme-paris",
        "acme-db-01",
        &controller.grpc_url,
        &[("database", "database", "5.8.0")],
    )
    .await;
    controller
        .wait_for_server("acme-db-01", "online", |s| s["online"] == true)
        .await;

    let browser = Browser::start().await;
    browser.sign_in(&controller).await;
    browser.goto(&format!("{}/", controller.http_url)).await;

    // The matrix: servers as rows, modules as columns, versions in the cells.
    wait_for_cell(&browser, "acme-web-01", "ecommerce", "5.8.0").await;
    wait_for_cell(&browser, "acme-web-01", "phygitalapi", "2.1.3").await;
    wait_for_cell(&browser, "acme-db-01", "database", "5.8.0").await;
    wait_for_cell(&browser, "acme-db-01", "ecommerce", "—").await;
    let site = browser
        .eval("return document.querySelector('[data-site=\"acme-paris\"] h2').textContent")
        .await;
    assert_eq!(site, "acme-paris");
    let columns = browser
        .eval("return [...document.querySelectorAll('[data-site=\"acme-paris\"] thead th')].map(th => th.textContent)")
        .await;
    // The agent is a module of every server, at its version.
    assert_eq!(
        columns,
        serde_json::json!([
            "Server",
            "Status",
            "database",
            "ecommerce",
            "phygitalapi",
            "flotilla-agent"
        ])
    );
    let agent_version = env!("CARGO_PKG_VERSION");
    wait_for_cell(&browser, "acme-web-01", "flotilla-agent", agent_version).await;
    wait_for_cell(&browser, "acme-db-01", "flotilla-agent", agent_version).await;

    // Mark the page: if it reloads, the mark is gone.
    browser
        .eval("window.flotillaMark = 'no reload'; return null")
        .await;

    let versions = browser
        .text_of(
            "ecommerce's versions across the fleet",
            "#versions .version-row[data-module='ecommerce']",
        )
        .await;
    assert!(versions.contains("5.8.0: 1"), "{versions}");

    web.set_version("ecommerce", "5.9.0");
    wait_for_cell(&browser, "acme-web-01", "ecommerce", "5.9.0").await;
    // The distribution follows, counted by the controller.
    wait_until("the versions chart to follow", async || {
        let text = browser
            .eval("const r = document.querySelector(\"#versions .version-row[data-module='ecommerce']\"); return r ? r.textContent : null")
            .await;
        text.as_str()
            .filter(|t| t.contains("5.9.0: 1"))
            .map(|_| ())
            .ok_or(text.to_string())
    })
    .await;

    db.child.kill().await.unwrap();
    wait_until("the dashboard to show acme-db-01 offline", async || {
        let status = browser
            .eval("return document.querySelector('tr[data-server=\"acme-db-01\"]').dataset.status")
            .await;
        (status == "offline")
            .then_some(())
            .ok_or(status.to_string())
    })
    .await;
    let status_text = browser
        .eval(
            "return document.querySelector('tr[data-server=\"acme-db-01\"] td.status').textContent",
        )
        .await;
    assert!(
        status_text.as_str().unwrap().contains("silent since"),
        "{status_text}"
    );
    let pill = browser
        .eval("return document.querySelector('[data-site=\"acme-paris\"] .pill').textContent")
        .await;
    assert_eq!(pill, "1/2 online");

    assert_eq!(
        browser.eval("return window.flotillaMark").await,
        "no reload"
    );
    browser.quit().await;
}

#[tokio::test]
async fn an_install_started_from_the_dashboard_is_followed_to_its_result() {
    use flotilla_agent::install::package::build;

    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let web = Agent::start(
        dir.path(),
        "acme-paris",
        "acme-web-01",
        &controller.grpc_url,
        &[("ecommerce", "web", "5.8.0")],
    )
    .await;
    let packages = web.data.join("bin/updates/packages");
    std::fs::create_dir_all(&packages).unwrap();
    let package = packages.join("ecommerce-5.9.0.zip");
    build::from_entries(
        &package,
        "module = \"ecommerce\"\nversion = \"5.9.0\"\nkind = \"web\"\n",
        &[("index.html", b"v5.9")],
    )
    .unwrap();
    flotilla_tests::sign_beside(&package);

    let browser = Browser::start().await;
    browser.sign_in(&controller).await;
    browser.goto(&format!("{}/", controller.http_url)).await;
    let button = "document.querySelector('tr[data-server=\"acme-web-01\"] [data-install-button=\"ecommerce\"]')";
    wait_until("the Install button", async || {
        let found = browser
            .eval(&format!("return {button} ? {button}.textContent : null"))
            .await;
        (found == "Install 5.9.0")
            .then_some(())
            .ok_or(found.to_string())
    })
    .await;
    browser
        .eval(&format!("{button}.click(); return null"))
        .await;

    wait_until("the dashboard to show the install's result", async || {
        let shown = browser
            .eval("const c = document.querySelector('tr[data-server=\"acme-web-01\"] td[data-module=\"ecommerce\"]'); return c ? [c.querySelector('.version').textContent, (c.querySelector('[data-install]') || {}).textContent || null] : null")
            .await;
        let ok = shown[0] == "5.9.0" && shown[1].as_str().is_some_and(|t| t.starts_with("✓ 5.9.0 ·") && t.ends_with("ms down"));
        ok.then_some(()).ok_or(shown.to_string())
    })
    .await;
    let leftover = browser.eval(&format!("return {button} === null")).await;
    assert_eq!(leftover, true, "no Install button once nothing is pending");
    browser.quit().await;
}

#[tokio::test]
async fn the_releases_page_shows_each_release_with_its_notes() {
    use flotilla_agent::install::package::{build, sha256_file};

    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let package = dir.path().join("ecommerce-5.9.0.zip");
    build::from_entries(
        &package,
        "module = \"ecommerce\"\nversion = \"5.9.0\"\nkind = \"web\"\n",
        &[("index.html", b"v5.9")],
    )
    .unwrap();
    let sha = sha256_file(&package).unwrap();
    let client = flotilla_tests::http();
    let uploaded = client
        .put(format!("{}/api/v1/packages/{sha}", controller.http_url))
        .body(std::fs::read(&package).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status().as_u16(), 201);
    let key = flotilla_proto::signing::SecretKey::generate().unwrap();
    let published = client
        .post(format!("{}/api/v1/releases", controller.http_url))
        .json(&serde_json::json!({
            "version": "2026.11", "notes": "# Autumn\n\n- **faster** checkout\n- <script>not run</script>",
            "packages": [{"sha256": sha, "signature": key.sign_package(&sha)}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 201);

    let browser = Browser::start().await;
    browser.sign_in(&controller).await;
    browser
        .goto(&format!("{}/releases", controller.http_url))
        .await;
    wait_until("the release on the page", async || {
        let shown = browser
            .eval("const r = document.querySelector('[data-release=\"2026.11\"]'); return r ? [r.querySelector('h2').textContent, r.querySelector('.notes h3').textContent, r.querySelector('.notes strong').textContent, r.querySelector('[data-package=\"ecommerce\"] .version').textContent, r.querySelectorAll('.notes script').length] : null")
            .await;
        (shown == serde_json::json!(["2026.11", "Autumn", "faster", "5.9.0", 0])).then_some(()).ok_or(shown.to_string())
    })
    .await;

    // Withdrawn from the page, with a reason; the page and the API say so.
    browser
        .eval(
            "const f = document.querySelector('[data-withdraw=\"2026.11\"]'); \
             f.reason.value = 'breaks checkout'; f.requestSubmit(); return true;",
        )
        .await;
    let shown = wait_until("the release shown withdrawn", async || {
        let text = browser
            .eval("const w = document.querySelector('[data-withdrawn=\"2026.11\"]'); return w && w.textContent")
            .await;
        text.as_str().map(str::to_owned).ok_or(text.to_string())
    })
    .await;
    assert!(
        shown.contains("withdrawn by admin") && shown.contains("breaks checkout"),
        "{shown}"
    );
    let (_, release) = controller.get("/api/v1/releases/2026.11").await;
    assert_eq!(release["withdrawn"]["by"], "admin", "{release}");
    browser.quit().await;
}

#[tokio::test]
async fn a_rollout_is_planned_started_and_watched_to_its_end_in_the_dashboard() {
    use flotilla_tests::sites::{
        Publisher, ServerSpec, hook, launch_server, wait_for_downloads, wait_for_rollout,
    };
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let publisher = Publisher::default();
    let servers = dir.path().join("servers");
    let app_modules: &[&str] = &["database", "integration"];
    let web_modules: &[&str] = &["ecommerce"];
    let app = launch_server(
        &servers,
        &controller,
        &publisher,
        "acme",
        ServerSpec {
            id: "acme-app",
            modules: app_modules,
        },
    )
    .await;
    let web = launch_server(
        &servers,
        &controller,
        &publisher,
        "acme",
        ServerSpec {
            id: "acme-web",
            modules: web_modules,
        },
    )
    .await;
    hook(
        &web,
        "POSTINSTALL",
        "ecommerce",
        "echo warming the shop cache",
    );
    publisher
        .publish(
            &controller,
            dir.path(),
            "2026.12",
            "2.0.0",
            &["database", "integration", "ecommerce"],
        )
        .await;
    wait_for_downloads(
        &controller,
        &[(&app, app_modules), (&web, web_modules)],
        "2.0.0",
    )
    .await;

    let browser = Browser::start().await;
    browser.sign_in(&controller).await;
    browser
        .goto(&format!("{}/rollouts", controller.http_url))
        .await;
    let eval = async |script: &str| browser.eval(script).await;
    wait_until("the release in the form", async || {
        let value = eval("return document.querySelector('#release').value").await;
        (value == "2026.12").then_some(()).ok_or(value.to_string())
    })
    .await;

    // The plan first: the site, its order and its servers.
    eval("document.querySelector('#preview').click(); return null").await;
    let plan = browser
        .text_of("the plan", "#plan [data-site='acme']")
        .await;
    assert!(
        plan.contains("database → integration → ecommerce"),
        "{plan}"
    );
    assert!(
        plan.contains("acme-app") && plan.contains("acme-web"),
        "{plan}"
    );
    let (_, rollouts) = controller.get("/api/v1/rollouts").await;
    assert_eq!(rollouts, serde_json::json!([]), "a preview starts nothing");

    // Start it and watch it to its end without a reload.
    eval("document.querySelector('#start').click(); return null").await;
    wait_until("the rollout shown", async || {
        let state = eval(
            "const s = document.querySelector('#rollout-state'); return s ? s.textContent : null",
        )
        .await;
        state.as_str().map(|_| ()).ok_or(state.to_string())
    })
    .await;
    let (_, rollouts) = controller.get("/api/v1/rollouts").await;
    let id = rollouts[0]["id"].as_i64().unwrap();
    wait_for_rollout(&controller, id, "succeeded", |r| r["state"] == "succeeded").await;
    wait_until("the dashboard to say succeeded", async || {
        let state = eval("return document.querySelector('#rollout-state').textContent").await;
        (state == "succeeded")
            .then_some(())
            .ok_or(state.to_string())
    })
    .await;
    let step = eval(
        "return document.querySelector('tr.step[data-server=\"acme-web\"][data-module=\"ecommerce\"] .step-state').textContent",
    )
    .await;
    assert_eq!(step, "succeeded");
    let site = eval("return document.querySelector('section.rollout-site[data-site=\"acme\"] .site-state').textContent").await;
    assert_eq!(site, "succeeded");
    let log = eval("return document.querySelector('table.log').textContent").await;
    let log = log.as_str().unwrap();
    assert!(
        // Recorded under the signed-in account, not anything the page says.
        log.contains("admin") && log.contains("created"),
        "{log}"
    );
    browser.quit().await;
}
