//! The fleet as a user sees it: real controller and agent processes, the REST
//! API, the agent's portal and files, and the gRPC protocol itself.

#![allow(clippy::unwrap_used)]

use flotilla_tests::{Agent, Controller, signal, version_of, wait_until};
use serde_json::{Value, json};

const WEB: &[(&str, &str, &str)] = &[
    ("ecommerce", "web", "5.8.0"),
    ("phygitalapi", "web", "2.1.3"),
];
const APP: &[(&str, &str, &str)] = &[
    ("integration", "service", "5.8.0"),
    ("gestioncommerciale", "web", "5.8.0"),
];

fn online(server: &Value) -> bool {
    server["online"] == true
}

#[tokio::test]
async fn agents_and_their_module_versions_appear_in_the_rest_api() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let _web = Agent::start(
        dir.path(),
        "acme-paris",
        "acme-web-01",
        &controller.grpc_url,
        WEB,
    )
    .await;
    let _app = Agent::start(
        dir.path(),
        "acme-paris",
        "acme-app-01",
        &controller.grpc_url,
        APP,
    )
    .await;
    let _other = Agent::start(
        dir.path(),
        "globex-lyon",
        "globex-db-01",
        &controller.grpc_url,
        &[("database", "database", "5.7.2")],
    )
    .await;

    let web = controller
        .wait_for_server("acme-web-01", "both modules reported", |s| {
            online(s) && version_of(s, "phygitalapi") == Some("2.1.3")
        })
        .await;
    assert_eq!(version_of(&web, "ecommerce"), Some("5.8.0"));
    assert_eq!(web["site"], "acme-paris");
    let ecommerce = web["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "ecommerce")
        .unwrap();
    assert_eq!(ecommerce["kind"], "web");
    assert_eq!(ecommerce["state"], "installed");
    assert!(
        ecommerce["install_path"]
            .as_str()
            .unwrap()
            .ends_with("apps/ecommerce")
    );
    controller
        .wait_for_server("globex-db-01", "its database", |s| {
            version_of(s, "database") == Some("5.7.2")
        })
        .await;
    controller
        .wait_for_server("acme-app-01", "its modules", |s| {
            version_of(s, "integration") == Some("5.8.0")
        })
        .await;

    let (status, servers) = controller.get("/api/v1/servers").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = servers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme-app-01", "acme-web-01", "globex-db-01"]);

    let (_, acme_only) = controller.get("/api/v1/servers?site=acme-paris").await;
    assert_eq!(acme_only.as_array().unwrap().len(), 2);

    let (status, sites) = controller.get("/api/v1/sites").await;
    assert_eq!(status, 200);
    let sites: Vec<(String, i64, i64)> = sites
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["servers"].as_i64().unwrap(),
                s["online"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sites,
        [
            ("acme-paris".to_owned(), 2, 2),
            ("globex-lyon".to_owned(), 1, 1)
        ]
    );
}

#[tokio::test]
async fn api_errors_are_json_and_the_openapi_document_describes_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;

    let (status, body) = controller.get("/api/v1/servers/no-such-server").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    assert!(
        body["message"].as_str().unwrap().contains("no-such-server"),
        "{body}"
    );

    let (status, body) = controller.get("/api/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("/api/v1/nothing-here"),
        "{body}"
    );

    let (status, openapi) = controller.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        openapi["openapi"].as_str().unwrap().starts_with("3."),
        "{openapi}"
    );
    for path in ["/api/v1/sites", "/api/v1/servers", "/api/v1/servers/{id}"] {
        assert!(
            openapi["paths"][path]["get"].is_object(),
            "{path} missing from {}",
            openapi["paths"]
        );
    }
    // The schema comes from the response types in the code.
    let server = &openapi["components"]["schemas"]["Server"]["properties"];
    for field in [
        "id",
        "site",
        "online",
        "last_seen_at",
        "went_silent_at",
        "modules",
        "problems",
    ] {
        assert!(
            server[field].is_object(),
            "Server.{field} missing from {server}"
        );
    }
}

#[tokio::test]
async fn a_version_changed_on_disk_reaches_the_controller_and_status_xml() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let agent = Agent::start(
        dir.path(),
        "acme-paris",
        "acme-web-01",
        &controller.grpc_url,
        WEB,
    )
    .await;
    controller
        .wait_for_server("acme-web-01", "ecommerce 5.8.0", |s| {
            version_of(s, "ecommerce") == Some("5.8.0")
        })
        .await;
    assert!(
        agent
            .status_xml()
            .contains(r#"name="ecommerce" kind="web" installedVersion="5.8.0""#)
    );

    agent.set_version("ecommerce", "5.9.0");
    let server = controller
        .wait_for_server("acme-web-01", "ecommerce 5.9.0", |s| {
            version_of(s, "ecommerce") == Some("5.9.0")
        })
        .await;
    assert_eq!(
        version_of(&server, "phygitalapi"),
        Some("2.1.3"),
        "the other module is untouched"
    );
    wait_until("status.xml to show 5.9.0", async || {
        let xml = agent.status_xml();
        xml.contains(r#"name="ecommerce" kind="web" installedVersion="5.9.0""#)
            .then_some(())
            .ok_or(xml)
    })
    .await;

    // A maintenance page left in the folder shows as such.
    std::fs::write(
        agent.data.join("apps/ecommerce/app_offline.htm"),
        "back soon",
    )
    .unwrap();
    controller
        .wait_for_server("acme-web-01", "ecommerce in maintenance", |s| {
            s["modules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "ecommerce" && m["state"] == "maintenance")
        })
        .await;
}

#[tokio::test]
async fn a_killed_agent_and_a_frozen_agent_go_offline_within_the_heartbeat_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let mut killed = Agent::start(
        dir.path(),
        "acme-paris",
        "acme-web-01",
        &controller.grpc_url,
        WEB,
    )
    .await;
    let frozen = Agent::start(
        dir.path(),
        "acme-paris",
        "acme-app-01",
        &controller.grpc_url,
        APP,
    )
    .await;
    controller
        .wait_for_server("acme-web-01", "online", online)
        .await;
    controller
        .wait_for_server("acme-app-01", "online", online)
        .await;

    killed.child.kill().await.unwrap();
    let server = controller
        .wait_for_server("acme-web-01", "offline after SIGKILL", |s| !online(s))
        .await;
    assert!(server["went_silent_at"].is_string(), "{server}");
    assert_eq!(
        version_of(&server, "ecommerce"),
        Some("5.8.0"),
        "its last known modules are kept"
    );

    // A frozen process keeps its TCP connection open: only the heartbeat
    // timeout can notice it.
    signal(&frozen.child, "STOP").await;
    let server = controller
        .wait_for_server("acme-app-01", "offline after SIGSTOP", |s| !online(s))
        .await;
    assert!(
        server["offline_reason"]
            .as_str()
            .unwrap()
            .contains("no heartbeat for 3000 ms"),
        "{server}"
    );
    assert_eq!(
        server["went_silent_at"], server["last_seen_at"],
        "went silent when it was last heard from"
    );

    signal(&frozen.child, "CONT").await;
    controller
        .wait_for_server("acme-app-01", "back online after SIGCONT", online)
        .await;
}

#[tokio::test]
async fn a_restarted_controller_finds_its_agents_reconnecting_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut controller = Controller::start(dir.path()).await;
    let agents_dir = dir.path().join("agents");
    let web = Agent::start(
        &agents_dir,
        "acme-paris",
        "acme-web-01",
        &controller.grpc_url,
        WEB,
    )
    .await;
    let _app = Agent::start(
        &agents_dir,
        "acme-paris",
        "acme-app-01",
        &controller.grpc_url,
        APP,
    )
    .await;
    let before = controller
        .wait_for_server("acme-web-01", "online", |s| {
            online(s) && version_of(s, "phygitalapi").is_some()
        })
        .await;
    controller
        .wait_for_server("acme-app-01", "online", online)
        .await;
    let (grpc, http) = (controller.grpc_addr(), controller.http_addr());

    controller.kill().await;
    // The agents keep working while the controller is away.
    web.set_version("ecommerce", "5.9.1");
    wait_until(
        "status.xml to follow while the controller is away",
        async || {
            let xml = web.status_xml();
            xml.contains(r#"installedVersion="5.9.1""#)
                .then_some(())
                .ok_or(xml)
        },
    )
    .await;
    assert!(web.portal().await.contains("5.9.1"));

    let controller = Controller::start_on(dir.path(), &grpc, &http).await;
    let after = controller
        .wait_for_server("acme-web-01", "reconnected with the new version", |s| {
            online(s) && version_of(s, "ecommerce") == Some("5.9.1")
        })
        .await;
    assert_eq!(
        after["first_seen_at"], before["first_seen_at"],
        "the same record, not a new one"
    );
    assert_eq!(version_of(&after, "phygitalapi"), Some("2.1.3"));
    controller
        .wait_for_server("acme-app-01", "reconnected", online)
        .await;
    let (_, sites) = controller.get("/api/v1/sites").await;
    assert_eq!(sites[0]["servers"], 2);
}

#[tokio::test]
async fn the_portal_lists_the_modules_and_says_all_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let agent = Agent::start(
        dir.path(),
        "acme-paris",
        "acme-web-01",
        &controller.grpc_url,
        WEB,
    )
    .await;
    let page = wait_until("the portal to show the controller link", async || {
        let page = agent.portal().await;
        page.contains("Connected to the controller")
            .then_some(page.clone())
            .ok_or(page)
    })
    .await;
    assert!(page.contains("All up to date"), "{page}");
    for needle in [
        "acme-web-01",
        "acme-paris",
        "data-module=\"ecommerce\"",
        "5.8.0",
        "phygitalapi",
        "2.1.3",
    ] {
        assert!(
            page.contains(needle),
            "{needle} missing from the portal:\n{page}"
        );
    }
}

#[tokio::test]
async fn a_malformed_applicationspath_config_is_reported_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let module = dir.path().join("acme-web-01/apps/ecommerce");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(module.join("version.txt"), "5.8.0").unwrap();
    let xml = format!(
        "<applications>\n  <application name=\"ecommerce\" kind=\"web\" path=\"{}\"/>\n  <application name=\"shop\" kind=\"iis\" path=\"/x\"/>\n  <application name=\"broken\" kind=\"web\" path=\"/y\"\n</applications>\n",
        module.display()
    );
    let agent = Agent::start_with_config(
        dir.path(),
        "acme-paris",
        "acme-web-01",
        &controller.grpc_url,
        &xml,
    )
    .await;

    let server = controller
        .wait_for_server("acme-web-01", "two problems and the good module", |s| {
            s["problems"].as_array().unwrap().len() >= 2
                && version_of(s, "ecommerce") == Some("5.8.0")
        })
        .await;
    let problems = server["problems"].as_array().unwrap();
    let config = agent
        .data
        .join("bin/config/applicationspath.config")
        .display()
        .to_string();
    assert_eq!(problems[0]["file"], config.as_str());
    assert_eq!(problems[0]["line"], 3);
    assert_eq!(
        problems[0]["message"],
        "module \"shop\": unknown module kind \"iis\": expected one of web, service, database"
    );
    assert_eq!(problems[1]["line"], 4);
    assert!(
        problems[1]["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed"),
        "{problems:?}"
    );

    let log = agent.log();
    assert!(
        log.contains(&format!(
            "{config}, line 3: module \"shop\": unknown module kind"
        )),
        "{log}"
    );
    let page = agent.portal().await;
    assert!(
        page.contains("line 3: module &quot;shop&quot;: unknown module kind"),
        "{page}"
    );

    // Fixing the file clears the problems without a restart.
    std::fs::write(
        agent.data.join("bin/config/applicationspath.config"),
        format!("<applications><application name=\"ecommerce\" kind=\"web\" path=\"{}\"/></applications>", module.display()),
    )
    .unwrap();
    controller
        .wait_for_server("acme-web-01", "no problems", |s| {
            s["problems"].as_array().unwrap().is_empty()
        })
        .await;
}

/// The procedure's own example: `POSTINSTALL-phygital.ps1` on a server
/// hosting `phygitalapi` names no module, so it would never run. It shows
/// as a server problem as soon as the agent scans, with a suggestion.
#[tokio::test]
async fn a_misnamed_hook_is_a_server_problem_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let module = dir.path().join("acme-web-01/apps/phygitalapi");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(module.join("version.txt"), "1.0.0").unwrap();
    let xml = format!(
        "<applications><application name=\"phygitalapi\" kind=\"web\" path=\"{}\"/></applications>",
        module.display()
    );
    let agent = Agent::start_with_config(
        dir.path(),
        "acme-paris",
        "acme-web-01",
        &controller.grpc_url,
        &xml,
    )
    .await;
    controller
        .wait_for_server("acme-web-01", "online, no problem", |s| {
            s["online"] == true && s["problems"].as_array().unwrap().is_empty()
        })
        .await;
    let scripts = agent.data.join("bin/updates/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let hook = scripts.join("POSTINSTALL-phygital.ps1");
    std::fs::write(&hook, "Write-Output 'warm the cache'").unwrap();

    let server = controller
        .wait_for_server("acme-web-01", "the hook's problem", |s| {
            !s["problems"].as_array().unwrap().is_empty()
        })
        .await;
    let problem = &server["problems"][0];
    assert_eq!(problem["file"], hook.display().to_string().as_str());
    assert_eq!(
        problem["message"],
        "hook POSTINSTALL-phygital.ps1 is never run: no module \"phygital\" on this server; did you mean \"phygitalapi\"? (modules: phygitalapi)"
    );
    let page = agent.portal().await;
    assert!(
        page.contains("did you mean &quot;phygitalapi&quot;?"),
        "{page}"
    );

    // Named as the procedure says, it is fine.
    std::fs::rename(&hook, scripts.join("POSTINSTALL-phygitalapi.ps1")).unwrap();
    controller
        .wait_for_server("acme-web-01", "no problems", |s| {
            s["problems"].as_array().unwrap().is_empty()
        })
        .await;
}

#[tokio::test]
async fn a_controller_database_that_cannot_be_opened_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("no-such-folder/controller.db");
    let output = tokio::process::Command::new(flotilla_tests::binary("flotilla-controller"))
        .args(["--db".as_ref(), db.as_os_str()])
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot open the controller database {}",
            db.display()
        )),
        "{stderr}"
    );

    // A file that is not a database is named too.
    let not_a_db = dir.path().join("notes.txt");
    std::fs::write(
        &not_a_db,
        "these are not the tables you are looking for ".repeat(100),
    )
    .unwrap();
    let output = tokio::process::Command::new(flotilla_tests::binary("flotilla-controller"))
        .args(["--db".as_ref(), not_a_db.as_os_str()])
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&not_a_db.display().to_string()), "{stderr}");
}

#[tokio::test]
async fn an_agent_speaking_another_protocol_version_is_refused_with_the_supported_versions() {
    use flotilla_proto::v1::{
        AgentMessage, Hello, agent_link_client::AgentLinkClient, agent_message::Body,
    };

    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let mut client = AgentLinkClient::new(
        flotilla_tests::tls::grpc_channel(&controller.grpc_url, "acme-paris", "future-01").await,
    );
    // A future agent, and one of the first protocol (whose database
    // answers were JSON in a string).
    for version in [99, 1] {
        let hello = AgentMessage {
            body: Some(Body::Hello(Hello {
                protocol_version: version,
                server_id: "future-01".into(),
                hostname: "future".into(),
                os: "linux x86_64".into(),
                agent_version: "9.0.0".into(),
                site: "acme-paris".into(),
                ..Hello::default()
            })),
        };
        let refused = client
            .session(tokio_stream::iter(vec![hello]))
            .await
            .expect_err("an unsupported protocol version must be refused");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(
            refused
                .message()
                .contains(&format!("speaks protocol version {version}"))
                && refused.message().contains("supports protocol versions 2"),
            "{}",
            refused.message()
        );
    }
    assert!(
        controller.server("future-01").await.is_none(),
        "nothing recorded"
    );
}

/// The fleet list pages by site then id, with a cursor, and filters in the
/// database by site, module, version, state and search; the summary counts
/// the fleet and each module's versions.
#[tokio::test]
async fn the_fleet_pages_filters_and_counts_its_versions() {
    use flotilla_tests::simulated::SimulatedAgent;
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let url = &controller.grpc_url;
    let mut agents = Vec::new();
    for site in ["acme", "bravo", "charlie"] {
        for n in 1..=3 {
            let id = format!("{site}-web-{n}");
            let version = if n == 3 { "5.9.0" } else { "5.8.0" };
            let modules = [("ecommerce", "web", version)];
            agents.push(
                SimulatedAgent::connect(url, site, &id, &modules)
                    .await
                    .unwrap(),
            );
        }
    }
    let db = SimulatedAgent::connect(url, "acme", "acme-db", &[("database", "database", "2.0.0")])
        .await
        .unwrap();
    controller
        .wait_for_server("acme-db", "online", |s| s["online"] == true)
        .await;
    let get = async |path: &str| {
        let response = flotilla_tests::http()
            .get(format!("{}{path}", controller.http_url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    };
    let ids = |body: &Value| -> Vec<String> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    wait_until("ten servers", async || {
        let (_, headers, _) = get("/api/v1/servers").await;
        (headers["x-total-count"] == "10")
            .then_some(())
            .ok_or(format!("{headers:?}"))
    })
    .await;

    // Pages of four, by site then id, following the cursor to the end.
    let mut seen = Vec::new();
    let mut path = "/api/v1/servers?limit=4".to_owned();
    loop {
        let (status, headers, body) = get(&path).await;
        assert_eq!(status, 200, "{body}");
        seen.extend(ids(&body));
        match headers.get("x-next-cursor") {
            Some(cursor) => {
                let link = headers["link"].to_str().unwrap();
                assert!(link.ends_with("; rel=\"next\""), "{link}");
                path = format!("/api/v1/servers?limit=4&after={}", cursor.to_str().unwrap());
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "acme-db",
            "acme-web-1",
            "acme-web-2",
            "acme-web-3",
            "bravo-web-1",
            "bravo-web-2",
            "bravo-web-3",
            "charlie-web-1",
            "charlie-web-2",
            "charlie-web-3"
        ]
    );

    // Filters, in SQL.
    let (_, headers, body) = get("/api/v1/servers?module=ecommerce&version=5.9.0").await;
    assert_eq!(ids(&body), ["acme-web-3", "bravo-web-3", "charlie-web-3"]);
    assert_eq!(headers["x-total-count"], "3");
    let (_, _, body) = get("/api/v1/servers?site=bravo&version=5.8.0").await;
    assert_eq!(ids(&body), ["bravo-web-1", "bravo-web-2"]);
    let (_, _, body) = get("/api/v1/servers?q=CHARLIE-WEB-2").await;
    assert_eq!(ids(&body), ["charlie-web-2"]);
    let (_, _, body) = get("/api/v1/servers?module=database").await;
    assert_eq!(ids(&body), ["acme-db"]);
    db.go_silent();
    drop(db);
    wait_until("acme-db offline", async || {
        let (_, _, body) = get("/api/v1/servers?state=offline").await;
        (ids(&body) == ["acme-db"])
            .then_some(())
            .ok_or(body.to_string())
    })
    .await;
    let (_, headers, _) = get("/api/v1/servers?state=online").await;
    assert_eq!(headers["x-total-count"], "9");
    let long = format!("q={}", "x".repeat(201));
    for bad in [
        "limit=0",
        "limit=1001",
        "after=nonsense",
        "state=asleep",
        &long,
    ] {
        let (status, _, body) = get(&format!("/api/v1/servers?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // The dashboard: a page at a time, and the filters.
    let browser = flotilla_tests::browser::Browser::start().await;
    browser.sign_in(&controller).await;
    browser.goto(&format!("{}/", controller.http_url)).await;
    let shown = async || -> Vec<String> {
        let ids = browser
            .eval("return [...document.querySelectorAll('#sites tr[data-server]')].map(r => r.dataset.server)")
            .await;
        serde_json::from_value(ids).unwrap_or_default()
    };
    wait_until("the first page", async || {
        let text = browser
            .eval("return document.getElementById('page-text').textContent")
            .await;
        (text == "servers 1–10 of 10")
            .then_some(())
            .ok_or(text.to_string())
    })
    .await;
    // Four a page (a size the form does not offer, to page ten servers).
    browser
        .eval("const s = document.getElementById('page-size'); s.add(new Option('4', '4')); s.value = '4'; s.dispatchEvent(new Event('change')); return null")
        .await;
    wait_until("page 1 of 3", async || {
        let ids = shown().await;
        (ids == ["acme-db", "acme-web-1", "acme-web-2", "acme-web-3"])
            .then_some(())
            .ok_or(format!("{ids:?}"))
    })
    .await;
    browser
        .eval("document.getElementById('page-next').click(); return null")
        .await;
    wait_until("page 2", async || {
        let ids = shown().await;
        (ids == ["bravo-web-1", "bravo-web-2", "bravo-web-3", "charlie-web-1"])
            .then_some(())
            .ok_or(format!("{ids:?}"))
    })
    .await;
    browser
        .eval("document.getElementById('page-previous').click(); return null")
        .await;
    wait_until("back to page 1", async || {
        let ids = shown().await;
        (ids.first().map(String::as_str) == Some("acme-db"))
            .then_some(())
            .ok_or(format!("{ids:?}"))
    })
    .await;
    browser
        .eval("const q = document.getElementById('filter-q'); q.value = 'charlie'; q.dispatchEvent(new Event('input')); return null")
        .await;
    wait_until("the search", async || {
        let ids = shown().await;
        (ids == ["charlie-web-1", "charlie-web-2", "charlie-web-3"])
            .then_some(())
            .ok_or(format!("{ids:?}"))
    })
    .await;
    browser
        .eval("const q = document.getElementById('filter-q'); q.value = ''; const s = document.getElementById('filter-state'); s.value = 'offline'; s.dispatchEvent(new Event('change')); return null")
        .await;
    wait_until("the offline ones", async || {
        let ids = shown().await;
        (ids == ["acme-db"]).then_some(()).ok_or(format!("{ids:?}"))
    })
    .await;
    browser.quit().await;

    // The counts, and who is still on the old version.
    let (status, _, summary) = get("/api/v1/fleet/summary").await;
    assert_eq!(status, 200);
    assert_eq!(summary["sites"], 3);
    assert_eq!(summary["servers"], 10);
    assert_eq!(summary["online"], 9);
    assert_eq!(summary["offline"], 1);
    let ecommerce = summary["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["module"] == "ecommerce")
        .unwrap();
    assert_eq!(
        ecommerce["versions"],
        json!([{"version": "5.8.0", "servers": 6}, {"version": "5.9.0", "servers": 3}])
    );
}
