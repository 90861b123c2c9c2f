//! The procedure's own path, in a real Chromium on a real agent's portal:
//! the person on the server opens `http://localhost:8080/`, sees the module
//! with its update and its release notes, presses **Install**, watches the
//! phases and sees it up to date; presses **Restore** on a kept backup;
//! finds every install, failures included, in the history after a restart,
//! with times in the server's zone; opens the Doctor; and reviews a
//! customized database's upgrade script by script. From inside the
//! browser, another site's form post to the portal is refused with a page
//! that says what to do.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use flotilla_agent::install::package::build;
use flotilla_tests::browser::Browser;
use flotilla_tests::{Agent, wait_until};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// No controller: the portal works without one.
const NO_CONTROLLER: &str = "https://127.0.0.1:9";

const NOTES: &str = "## What changes\n\n- **Faster** checkout\n- VAT on `gift cards`\n\n\
                     <script>document.title = 'pwned'</script>\n";

/// A web server with `ecommerce` 1.0.0 and `phygitalapi` 2.1.3 installed,
/// `ecommerce` 2.0.0 pending (signed, with release notes), and hooks that
/// say what they do.
async fn web_server(dir: &Path) -> Agent {
    let data = dir.join("web-01");
    let mut xml = String::from("<applications>\n");
    for (name, version) in [("ecommerce", "1.0.0"), ("phygitalapi", "2.1.3")] {
        let module = data.join("sites").join(name);
        std::fs::create_dir_all(&module).unwrap();
        std::fs::write(module.join("version.txt"), format!("{version}\n")).unwrap();
        std::fs::write(
            module.join("index.html"),
            format!("<h1>{name} {version}</h1>"),
        )
        .unwrap();
        xml.push_str(&format!(
            "  <application name=\"{name}\" kind=\"web\" path=\"{}\" />\n",
            module.display()
        ));
    }
    xml.push_str("</applications>\n");
    let packages = data.join("bin/updates/packages");
    std::fs::create_dir_all(&packages).unwrap();
    let package = packages.join("ecommerce-2.0.0.zip");
    build::from_entries(
        &package,
        "module = \"ecommerce\"\nversion = \"2.0.0\"\nkind = \"web\"\n",
        &[
            ("index.html", b"<h1>ecommerce 2.0.0</h1>"),
            ("version.txt", b"2.0.0\n"),
        ],
    )
    .unwrap();
    flotilla_tests::sign_beside(&package);
    std::fs::write(format!("{}.notes.md", package.display()), NOTES).unwrap();
    let scripts = data.join("bin/updates/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    // The first install waits in STARTUPDATE until the test opens the gate.
    std::fs::write(
        scripts.join("STARTUPDATE_ecommerce.sh"),
        format!(
            "echo \"warming the cache of $E_MODULE\"\nwhile [ ! -f {gate:?} ]; do sleep 0.05; done\necho 'cache warm'\n",
            gate = dir.join("gate").display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        scripts.join("POSTINSTALL-ecommerce.sh"),
        "echo \"web.config edited in $E_MODULE_PATH\"\n",
    )
    .unwrap();
    Agent::launch_with(
        dir,
        "acme",
        "web-01",
        NO_CONTROLLER,
        &xml,
        100,
        &flotilla_tests::trusted_publisher(),
    )
    .await
}

/// The text of the first element matching `selector`, or null.
async fn text(browser: &Browser, selector: &str) -> Value {
    browser
        .eval(&format!(
            "const e = document.querySelector({selector:?}); return e ? e.textContent.trim() : null"
        ))
        .await
}

/// Waits until the first element matching `selector` has text `wanted`
/// (`what` says what the person waits for).
async fn wait_for_text(browser: &Browser, what: &str, selector: &str, wanted: &str) {
    wait_until(what, async || {
        let found = text(browser, selector).await;
        (found == wanted).then_some(()).ok_or(found.to_string())
    })
    .await;
}

/// Waits until the first element matching `selector` has text containing
/// `wanted`; returns the whole text.
async fn wait_for_text_with(browser: &Browser, what: &str, selector: &str, wanted: &str) -> String {
    wait_until(what, async || {
        let found = text(browser, selector).await;
        match found.as_str() {
            Some(t) if t.contains(wanted) => Ok(t.to_owned()),
            _ => Err(found.to_string()),
        }
    })
    .await
}

/// Clicks the first element matching `selector`, as a person would.
async fn click(browser: &Browser, selector: &str) {
    let clicked = browser
        .eval(&format!(
            "const e = document.querySelector({selector:?}); if (!e) return false; e.click(); return true"
        ))
        .await;
    assert_eq!(clicked, true, "nothing to click at {selector}");
}

async fn wait_for_path(browser: &Browser, path: &str) {
    wait_until(&format!("the browser to reach {path}"), async || {
        let at = browser.eval("return location.pathname").await;
        (at == path).then_some(()).ok_or(at.to_string())
    })
    .await;
}

fn version(agent: &Agent, module: &str) -> String {
    std::fs::read_to_string(agent.data.join("sites").join(module).join("version.txt"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Builds `ecommerce` `version`, puts it in the agent's packages folder
/// signed, and returns the JSON API's request that names it.
fn staged(agent: &Agent, dir: &Path, version: &str) -> Value {
    let built = dir.join(format!("ecommerce-{version}.zip"));
    build::from_entries(
        &built,
        &format!("module = \"ecommerce\"\nversion = \"{version}\"\nkind = \"web\"\n"),
        &[
            (
                "index.html",
                format!("<h1>ecommerce {version}</h1>").as_bytes(),
            ),
            ("version.txt", format!("{version}\n").as_bytes()),
        ],
    )
    .unwrap();
    let target: PathBuf = agent
        .data
        .join("bin/updates/packages")
        .join(format!("staged-ecommerce-{version}.zip"));
    std::fs::copy(&built, &target).unwrap();
    json!({"sha256": flotilla_tests::sign_beside(&target)})
}

#[tokio::test]
async fn a_person_installs_restores_and_reads_the_history_on_the_portal() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = web_server(dir.path()).await;
    let browser = Browser::start().await;
    browser.goto(&agent.portal_link().await).await;

    // Each module's true state: the update offered, with its version.
    let ecommerce = "tr[data-module='ecommerce'] td.state";
    let phygitalapi = "tr[data-module='phygitalapi'] td.state";
    wait_for_text(
        &browser,
        "ecommerce's update",
        ecommerce,
        "update to 2.0.0 offered",
    )
    .await;
    assert_eq!(text(&browser, phygitalapi).await, "up to date");
    assert_eq!(text(&browser, "#headline").await, "1 update to install");

    // The release notes, rendered; the HTML they carry shown as text.
    let notes = ".release-notes";
    assert_eq!(text(&browser, &format!("{notes} strong")).await, "Faster");
    assert_eq!(
        text(&browser, &format!("{notes} li code")).await,
        "gift cards"
    );
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('.release-notes script').length")
            .await,
        0
    );
    assert!(
        text(&browser, notes)
            .await
            .as_str()
            .unwrap()
            .contains("<script>")
    );
    assert_ne!(browser.eval("return document.title").await, "pwned");

    // The page follows the server without reloading: another module's new
    // version appears, and the Install button is the very same element.
    browser
        .eval("window.samePage = true; window.installButton = document.querySelector(\"tr[data-update='ecommerce'] button\"); return null")
        .await;
    std::fs::write(agent.data.join("sites/phygitalapi/version.txt"), "2.1.4\n").unwrap();
    wait_for_text(
        &browser,
        "phygitalapi 2.1.4 on the open page",
        "tr[data-module='phygitalapi'] td.version",
        "2.1.4",
    )
    .await;
    let kept = browser
        .eval("return window.samePage === true && document.contains(window.installButton)")
        .await;
    assert_eq!(
        kept, true,
        "the page reloaded or swapped its Install button"
    );

    // Install: the live page shows the phases and the hooks, then the result.
    assert_eq!(
        text(&browser, "tr[data-update='ecommerce'] button").await,
        "Install 2.0.0"
    );
    browser
        .eval("window.installButton.click(); return null")
        .await;
    wait_for_path(&browser, "/installs/ecommerce").await;
    wait_for_text_with(
        &browser,
        "the hook's first line",
        "#events",
        "warming the cache of ecommerce",
    )
    .await;
    assert_eq!(text(&browser, "#result").await, "Installing…");
    // Meanwhile the portal's buttons wait for it, and say why.
    let home = agent.portal().await;
    assert!(
        home.contains("<button type=\"submit\" disabled title=\"ecommerce is running; the buttons come back when it ends\">Install 2.0.0</button>"),
        "{home}"
    );
    browser.eval("window.samePage = true; return null").await;
    std::fs::write(dir.path().join("gate"), "").unwrap();
    wait_for_text_with(
        &browser,
        "the install's result",
        "#result",
        "Installed ecommerce 2.0.0",
    )
    .await;
    let followed = browser.eval("return window.samePage === true").await;
    assert_eq!(
        followed, true,
        "the install's page reloaded instead of following it"
    );
    let events = text(&browser, "#events").await;
    let events = events.as_str().unwrap();
    let phases = [
        "STARTUPDATE",
        "PREBACKUP",
        "POSTBACKUP",
        "PREINSTALL",
        "POSTINSTALL",
        "ENDUPDATE",
    ];
    let mut at = 0;
    for phase in phases {
        let found = events[at..].find(&format!("▶ {phase}"));
        assert!(found.is_some(), "{phase} in order in {events}");
        at += found.unwrap();
    }
    assert!(
        events.contains("│ warming the cache of ecommerce"),
        "{events}"
    );
    assert!(events.contains("│ web.config edited in "), "{events}");
    assert_eq!(version(&agent, "ecommerce"), "2.0.0");

    // Back on the portal: up to date, the install in the history, the
    // version taken down kept as a backup with its date and size.
    click(&browser, "#back").await;
    wait_for_path(&browser, "/").await;
    wait_for_text(
        &browser,
        "everything up to date",
        "#headline",
        "All up to date",
    )
    .await;
    assert_eq!(text(&browser, ecommerce).await, "up to date");
    assert_eq!(
        text(&browser, "tr[data-module='ecommerce'] td.version").await,
        "2.0.0"
    );
    let install = text(&browser, "#history tbody tr").await;
    let install = install.as_str().unwrap();
    assert!(
        install.contains("ecommerce")
            && install.contains("1.0.0 → 2.0.0")
            && install.contains("installed"),
        "{install}"
    );
    let backups = browser
        .eval("return [...document.querySelectorAll('#backups tbody tr')].map(r => [r.dataset.backup, r.textContent])")
        .await;
    let backups = backups.as_array().unwrap();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let (file, row) = (
        backups[0][0].as_str().unwrap(),
        backups[0][1].as_str().unwrap(),
    );
    assert!(
        file.starts_with("ecommerce_1.0.0_") && file.ends_with(".zip"),
        "{file}"
    );
    let size = std::fs::metadata(agent.data.join("bin/updates/backups").join(file))
        .unwrap()
        .len();
    assert!(
        row.contains(&flotilla_agent::html::size(size)),
        "the size in {row}"
    );
    assert!(
        row.contains("Restore 1.0.0 of 20"),
        "the date on its button: {row}"
    );

    // Restore the kept version.
    click(
        &browser,
        "#backups tr[data-backup^='ecommerce_1.0.0_'] button",
    )
    .await;
    wait_for_path(&browser, "/installs/ecommerce").await;
    wait_for_text_with(
        &browser,
        "the restore's result",
        "#result",
        "Restored ecommerce 1.0.0",
    )
    .await;
    assert_eq!(version(&agent, "ecommerce"), "1.0.0");
    // The browser's Back button leads to the portal as it is now.
    browser.eval("history.back(); return null").await;
    wait_for_path(&browser, "/").await;
    wait_for_text(
        &browser,
        "1.0.0 on the page the Back button shows",
        "tr[data-module='ecommerce'] td.version",
        "1.0.0",
    )
    .await;

    // An install that fails: a hook says why, the module is rolled back.
    let scripts = agent.data.join("bin/updates/scripts");
    std::fs::write(
        scripts.join("POSTINSTALL_ecommerce.sh"),
        "echo 'cannot reach the payment gateway' >&2\nexit 3\n",
    )
    .unwrap();
    let response = agent
        .portal_http()
        .post(format!(
            "{}/api/modules/ecommerce/install",
            agent.portal_base()
        ))
        .json(&staged(&agent, dir.path(), "3.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let status_url = format!("{}/api/modules/ecommerce/install", agent.portal_base());
    wait_until("the failed install to end", async || {
        let status: Value = flotilla_tests::http()
            .get(&status_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (status["running"] == false && status["to"] == "3.0.0")
            .then_some(())
            .ok_or(status.to_string())
    })
    .await;
    assert_eq!(version(&agent, "ecommerce"), "1.0.0");

    // After a restart, in the server's own zone: every install is there.
    agent
        .relaunch("flotilla-agent", &[("TZ", "Europe/Paris")])
        .await;
    browser.goto(&agent.portal_url).await;
    let rows = wait_until("the three installs in the history", async || {
        let rows = browser
            .eval("return [...document.querySelectorAll('#history tbody tr')].map(r => r.textContent)")
            .await;
        match rows.as_array() {
            Some(rows) if rows.len() == 3 => Ok(rows.clone()),
            _ => Err(rows.to_string()),
        }
    })
    .await;
    let rows: Vec<&str> = rows.iter().map(|r| r.as_str().unwrap()).collect();
    assert!(
        rows[0].contains("1.0.0 → 3.0.0") && rows[0].contains("failed, rolled back"),
        "{rows:?}"
    );
    assert!(
        rows[1].contains("2.0.0 → 1.0.0") && rows[1].contains("restored"),
        "{rows:?}"
    );
    assert!(
        rows[2].contains("1.0.0 → 2.0.0") && rows[2].contains("installed"),
        "{rows:?}"
    );
    let footer = text(&browser, "[data-live='footer']").await;
    assert!(
        footer
            .as_str()
            .unwrap()
            .contains("Europe/Paris (UTC+01:00)"),
        "{footer}"
    );
    let times = browser
        .eval("return [...document.querySelectorAll('#history time')].map(t => [t.getAttribute('datetime'), t.textContent])")
        .await;
    for pair in times.as_array().unwrap() {
        let instant = chrono::DateTime::parse_from_rfc3339(pair[0].as_str().unwrap()).unwrap();
        let paris = instant.with_timezone(&chrono_tz::Europe::Paris);
        assert_eq!(pair[1], paris.format("%Y-%m-%d %H:%M:%S %Z").to_string());
        assert!(pair[1].as_str().unwrap().ends_with(" CET"), "{pair}");
    }

    // The failure's details, with the hook's own words.
    click(&browser, "#history tbody tr a").await;
    wait_for_path(&browser, "/history/ecommerce").await;
    let failed = wait_for_text_with(
        &browser,
        "the failed install's details",
        "article.card",
        "cannot reach the payment gateway",
    )
    .await;
    assert!(
        failed.contains("Install failed, rolled back") && failed.contains("POSTINSTALL"),
        "{failed}"
    );

    // The Doctor page.
    click(&browser, "#back").await;
    wait_for_path(&browser, "/").await;
    click(&browser, "#doctor-link").await;
    wait_for_path(&browser, "/doctor").await;
    let verdict = browser
        .eval("const v = document.getElementById('verdict'); return v ? v.dataset.worst : null")
        .await;
    assert!(
        ["ok", "warn", "fail"].contains(&verdict.as_str().unwrap_or("")),
        "{verdict}"
    );
    let checks = browser
        .eval("return [...document.querySelectorAll('tr.check')].map(r => r.dataset.check)")
        .await;
    assert!(
        checks.as_array().unwrap().iter().any(|c| c == "hooks"),
        "{checks}"
    );
    browser.quit().await;
}

/// Serves `page` at every path of a new port on 127.0.0.1: another web
/// site on the same machine. Returns its port.
async fn another_site(page: String) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 16 * 1024];
                let _ = stream.read(&mut request).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn another_sites_form_cannot_install_through_the_portal() {
    let dir = tempfile::tempdir().unwrap();
    let agent = web_server(dir.path()).await;
    let portal = agent.portal_base();
    // The worst case: the other page even knows the portal's token.
    let page = agent.portal().await;
    let token = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let form = |action: &str, token: &str| {
        format!(
            "<!doctype html><html><body><form id=\"attack\" method=\"post\" action=\"{portal}{action}\"><input type=\"hidden\" name=\"csrf\" value=\"{token}\"><button>Win a prize</button></form></body></html>"
        )
    };
    let same_machine = another_site(form("/install/ecommerce", &token)).await;
    // The server's administrator is signed in to the portal in this browser.
    let browser = Browser::start().await;
    browser.goto(&agent.portal_link().await).await;
    let status_url = format!("{portal}/api/modules/ecommerce/install");
    for (what, url) in [
        // Another port on the same address: same site, another origin.
        (
            "another origin",
            format!("http://127.0.0.1:{same_machine}/"),
        ),
        // Another name for this machine: another site.
        ("another site", format!("http://localhost:{same_machine}/")),
        // A page with no origin at all (Origin: null) and no token.
        (
            "a page with no origin",
            format!(
                "data:text/html,{}",
                form("/rollback/ecommerce", "guessed").replace('#', "%23")
            ),
        ),
    ] {
        browser.goto(&url).await;
        browser
            .eval("document.getElementById('attack').submit(); return null")
            .await;
        let refused = wait_for_text_with(
            &browser,
            &format!("the refusal of {what}'s form"),
            "#message h2",
            "Refused",
        )
        .await;
        assert_eq!(refused, "Refused");
        let message = text(&browser, "#message").await;
        let message = message.as_str().unwrap();
        // Refused for where it comes from, or, where the browser keeps its
        // session cookie from another site's page, for want of one.
        assert!(
            message.contains("is refused")
                || message.contains("did not come from the portal")
                || message.contains("needs an administrator of this server"),
            "{what}: {message}"
        );
        let what_to_do = text(&browser, "#what-to-do").await;
        let what_to_do = what_to_do.as_str().unwrap();
        assert!(
            what_to_do.contains("Open the portal") || what_to_do.contains("portal-link"),
            "{what}: {what_to_do}"
        );
        let status = flotilla_tests::http()
            .get(&status_url)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{what}: no install started");
        assert_eq!(version(&agent, "ecommerce"), "1.0.0", "{what}");
    }
    // An address of a button, or of no module, opened as a page: a page
    // that says so, with the way back.
    for (address, title) in [
        ("/install/ecommerce", "Not a page"),
        ("/history/nosuch", "No such module"),
        ("/installs/..%2F..%2Fetc", "No such module"),
    ] {
        browser.goto(&format!("{portal}{address}")).await;
        wait_for_text(&browser, address, "#message h2", title).await;
    }
    // The refusal's way back leads to the portal, whose own button works.
    std::fs::write(dir.path().join("gate"), "").unwrap();
    click(&browser, "#back").await;
    wait_for_path(&browser, "/").await;
    click(&browser, "tr[data-update='ecommerce'] button").await;
    wait_for_path(&browser, "/installs/ecommerce").await;
    wait_for_text_with(
        &browser,
        "the install's result",
        "#result",
        "Installed ecommerce 2.0.0",
    )
    .await;
    assert!(agent.log().contains("portal request refused"));
    browser.quit().await;
}

/// The version of `module` on disk, laid out under `apps/`.
fn version_of(agent: &Agent, module: &str) -> String {
    std::fs::read_to_string(agent.data.join("apps").join(module).join("version.txt"))
        .unwrap()
        .trim()
        .to_owned()
}

/// The state the database page shows for `script`.
async fn script_state(browser: &Browser, script: &str) -> Value {
    browser
        .eval(&format!(
            "const a = document.querySelector(\"article.script[data-script='{script}']\"); return a ? a.dataset.state : null"
        ))
        .await
}

#[tokio::test]
async fn a_customized_database_is_upgraded_script_by_script_from_the_portal() {
    use flotilla_tests::postgres::Postgres;
    use flotilla_tests::shop::{STANDARD_PG, build_package};
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
    let agent = flotilla_tests::shop::database_agent(
        dir.path(),
        &server,
        "custom",
        &package,
        NO_CONTROLLER,
    )
    .await;
    let browser = Browser::start().await;
    browser.goto(&agent.portal_link().await).await;
    wait_for_text(
        &browser,
        "the database's update",
        "tr[data-module='database'] td.state",
        "update to 2.0.0 offered",
    )
    .await;

    // The review: what differs, then the scripts with the next one's buttons.
    browser
        .goto(&format!("{}/database/database", agent.portal_base()))
        .await;
    let verdict = text(&browser, "#verdict").await;
    assert!(
        verdict
            .as_str()
            .unwrap()
            .contains("customized (1 differences)"),
        "{verdict}"
    );
    let drift = text(&browser, "#drift summary").await;
    assert_eq!(drift, "modified view public.v_orders");
    let run = |script: &str| {
        format!("article.script[data-script='{script}'] form[action$='/run'] button")
    };
    let mark = |script: &str| {
        format!("article.script[data-script='{script}'] form[action$='/mark-applied'] button")
    };
    assert_eq!(
        browser
            .eval(&format!(
                "return document.querySelector({:?}) === null",
                run("002_view.sql")
            ))
            .await,
        true,
        "only the next script has buttons"
    );

    // Run the first.
    click(&browser, &run("001_loyalty.sql")).await;
    wait_until("001 succeeded", async || {
        let state = script_state(&browser, "001_loyalty.sql").await;
        (state == "succeeded")
            .then_some(())
            .ok_or(state.to_string())
    })
    .await;

    // The second collides with the customization: it fails, rolled back,
    // and the page says what to do.
    click(&browser, &run("002_view.sql")).await;
    let failed =
        wait_for_text_with(&browser, "002's failure", "#message", "002_view.sql failed").await;
    assert!(failed.contains("rolled back"), "{failed}");
    let what_to_do = text(&browser, "#what-to-do").await;
    assert!(
        what_to_do.as_str().unwrap().contains("/database/database"),
        "{what_to_do}"
    );
    assert_eq!(
        server.psql("custom", "SELECT count(*) FROM flotilla_schema_history WHERE script = '002_view.sql' AND outcome = 'succeeded'"),
        "0"
    );

    // The operator applies it by hand, marks it, then runs the last.
    server.psql("custom", "DROP VIEW v_orders; CREATE VIEW v_orders AS SELECT o.id, c.name, o.total, o.placed_at, c.loyalty_points FROM orders o JOIN customers c ON c.id = o.customer_id");
    browser
        .goto(&format!("{}/database/database", agent.portal_base()))
        .await;
    click(&browser, &mark("002_view.sql")).await;
    wait_until("002 marked applied", async || {
        let state = script_state(&browser, "002_view.sql").await;
        (state == "marked applied")
            .then_some(())
            .ok_or(state.to_string())
    })
    .await;
    click(&browser, &run("003_index.sql")).await;
    wait_until("003 succeeded", async || {
        let state = script_state(&browser, "003_index.sql").await;
        (state == "succeeded")
            .then_some(())
            .ok_or(state.to_string())
    })
    .await;
    assert_eq!(
        server.psql("custom", "SELECT string_agg(script || ' ' || outcome || ' ' || applied_by, ', ' ORDER BY id) FROM flotilla_schema_history"),
        "001_loyalty.sql succeeded portal (local), 002_view.sql failed portal (local), 002_view.sql marked applied portal (local), 003_index.sql succeeded portal (local)"
    );

    // The module's files now; then the way back, which asks about the
    // database before anything is restored.
    browser.goto(&agent.portal_url).await;
    click(&browser, "tr[data-update='database'] button").await;
    wait_for_text_with(
        &browser,
        "the install's result",
        "#result",
        "Installed database 2.0.0",
    )
    .await;
    click(&browser, "#back").await;
    click(
        &browser,
        "#backups tr[data-backup^='database_1.0.0_'] a.button",
    )
    .await;
    wait_for_path(&browser, "/restore/database").await;
    let lost = text(&browser, "#discard").await;
    assert!(
        lost.as_str()
            .unwrap()
            .contains("no database backup of database 1.0.0 is kept"),
        "{lost}"
    );
    assert_eq!(
        version_of(&agent, "database"),
        "2.0.0",
        "nothing restored before the choice"
    );
    click(&browser, "#keep button").await;
    wait_for_text_with(
        &browser,
        "the restore's result",
        "#result",
        "Restored database 1.0.0",
    )
    .await;
    assert_eq!(version_of(&agent, "database"), "1.0.0");
    assert_eq!(
        server.psql(
            "custom",
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'loyalty_points'"
        ),
        "1",
        "the database was kept as it is"
    );

    // The other choice, back to the version just set aside: the files and
    // the database (which is at that version's schema already).
    click(&browser, "#back").await;
    click(
        &browser,
        "#backups tr[data-backup^='database_2.0.0_'] a.button",
    )
    .await;
    wait_for_path(&browser, "/restore/database").await;
    click(&browser, "#restore button").await;
    wait_for_text_with(
        &browser,
        "the restore's result",
        "#result",
        "Restored database 2.0.0",
    )
    .await;
    assert_eq!(version_of(&agent, "database"), "2.0.0");
    assert_eq!(
        server.psql(
            "custom",
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'loyalty_points'"
        ),
        "1"
    );
    browser.quit().await;
}

/// A person signs in to the portal with the one-time link that
/// `flotilla-agent portal-link`, run by an administrator, prints; the link
/// works once; signed out with the page's button, the Install button leads
/// to a refusal that says how to sign in.
#[tokio::test]
async fn an_administrator_signs_in_with_a_one_time_link_and_out_with_the_button() {
    let dir = tempfile::tempdir().unwrap();
    let agent = web_server(dir.path()).await;
    let browser = Browser::start().await;
    browser.goto(&agent.portal_url).await;
    wait_for_text_with(
        &browser,
        "the sign-in notice",
        "#sign-in-notice",
        "flotilla-agent portal-link",
    )
    .await;
    let printed = tokio::process::Command::new(flotilla_tests::binary("flotilla-agent"))
        .arg("--config")
        .arg(agent.data.join("agent.toml"))
        .arg("portal-link")
        // The test's portal listens on a port the system chose.
        .args(["--portal", &agent.portal_base()])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&printed.stdout).into_owned();
    assert!(
        printed.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let link = said.lines().next().unwrap().to_owned();
    assert!(
        link.starts_with(&format!("{}/login?code=", agent.portal_base())),
        "{said}"
    );
    browser.goto(&link).await;
    wait_for_path(&browser, "/").await;
    wait_for_text_with(
        &browser,
        "signed in",
        "#signed-in",
        "Signed in as an administrator",
    )
    .await;
    // Once only.
    let again = reqwest::get(&link).await.unwrap();
    assert_eq!(again.status(), 403);

    click(&browser, "#sign-out").await;
    wait_for_text_with(
        &browser,
        "the sign-in notice again",
        "#sign-in-notice",
        "flotilla-agent portal-link",
    )
    .await;
    click(&browser, "tr[data-update='ecommerce'] button").await;
    wait_for_text(&browser, "the refusal", "#message h2", "Refused").await;
    let what_to_do = browser
        .eval("return document.getElementById('what-to-do').textContent")
        .await;
    assert!(
        what_to_do
            .as_str()
            .unwrap()
            .contains("flotilla-agent portal-link"),
        "{what_to_do}"
    );
    assert_eq!(
        version(&agent, "ecommerce"),
        "1.0.0",
        "nothing was installed"
    );
    browser.quit().await;
}
