//! Agents' identities: enrollment with one-time tokens, mutual TLS, and
//! every way an agent without a valid identity is refused, each with its
//! reason in the controller's log.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use flotilla_proto::v1::agent_link_client::AgentLinkClient;
use flotilla_proto::v1::{AgentMessage, Hello, agent_message::Body};
use flotilla_tests::simulated::SimulatedAgent;
use flotilla_tests::{Agent, Controller, binary, wait_until};
use serde_json::{Value, json};

const WEB: &[(&str, &str, &str)] = &[("ecommerce", "web", "5.8.0")];

/// The data folder and configuration of server `acme-web-01`'s agent
/// before enrollment: no site, no server id, no certificate.
fn unenrolled_agent(dir: &Path, controller: &Controller) -> (PathBuf, PathBuf) {
    let data = dir.join("acme-web-01");
    std::fs::create_dir_all(data.join("bin").join("config")).unwrap();
    std::fs::write(
        data.join("bin/config/applicationspath.config"),
        "<applications/>",
    )
    .unwrap();
    let config = data.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\ncontroller_url = \"{}\"\nportal_listen = \"127.0.0.1:0\"\n",
            data.display().to_string(),
            controller.grpc_url
        ),
    )
    .unwrap();
    (data, config)
}

/// The token and the agent's arguments of the command the dashboard shows
/// (`sudo flotilla-agent join …`, the token pasted at its prompt).
fn shown_command(command: &str) -> Vec<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words[0], "sudo", "{command}");
    let agent = words.iter().position(|w| *w == "flotilla-agent").unwrap();
    words[agent + 1..].iter().map(|w| (*w).to_owned()).collect()
}

/// Runs `flotilla-agent --config <config> <arguments> --unit-dir <units>`
/// with `token` piped in, as the dashboard's command does.
async fn join(config: &Path, token: &str, arguments: &[String], units: &Path) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(binary("flotilla-agent"))
        .arg("--config")
        .arg(config)
        .args(arguments)
        .arg("--unit-dir")
        .arg(units)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{token}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

/// An enrollment token for `server` of `site`, as an admin creates it.
async fn token_for(controller: &Controller, server: &str, site: &str) -> Value {
    let response = flotilla_tests::http()
        .post(format!("{}/api/v1/enrollments", controller.http_url))
        .json(&json!({"server": server, "site": site}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// Runs `flotilla-agent enroll` with the configuration `config`.
async fn enroll(config: &Path, controller: &str, token: &str, fingerprint: &str) -> Output {
    tokio::process::Command::new(binary("flotilla-agent"))
        .arg("--config")
        .arg(config)
        .args(["enroll", "--controller", controller])
        .env("FLOTILLA_ENROLLMENT_TOKEN", token)
        .args(["--ca-fingerprint", fingerprint])
        .output()
        .await
        .unwrap()
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Waits until the controller's log holds `text`.
async fn log_says(controller: &Controller, text: &str) -> String {
    wait_until(&format!("the controller's log says {text:?}"), async || {
        let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
        match log.lines().find(|line| line.contains(text)) {
            Some(line) => Ok(line.to_owned()),
            None => Err(log),
        }
    })
    .await
}

fn hello(site: &str, server: &str) -> AgentMessage {
    AgentMessage {
        body: Some(Body::Hello(Hello {
            protocol_version: flotilla_proto::PROTOCOL_VERSION,
            server_id: server.into(),
            hostname: server.into(),
            os: "linux".into(),
            agent_version: "1.0.0".into(),
            site: site.into(),
            ..Hello::default()
        })),
    }
}

/// Opens a stream with `tls` and says `hello`; the status it is refused with.
async fn refused_with(
    url: &str,
    tls: tonic::transport::ClientTlsConfig,
    hello: AgentMessage,
) -> String {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(e) => return format!("{e:?}"),
    };
    match AgentLinkClient::new(channel)
        .session(tokio_stream::iter(vec![hello]))
        .await
    {
        Ok(_) => panic!("the controller took the stream"),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

#[tokio::test]
async fn an_enrolled_agent_connects_as_the_token_said_and_a_token_works_once() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let fingerprint = controller.ca_fingerprint.clone().unwrap();
    let (data, config) = unenrolled_agent(dir.path(), &controller);

    // Not enrolled yet: the agent does not start, and says how to enroll.
    let unenrolled = tokio::process::Command::new(binary("flotilla-agent"))
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(!unenrolled.status.success());
    assert!(
        said(&unenrolled).contains("this agent is not enrolled")
            && said(&unenrolled).contains("flotilla-agent enroll"),
        "{}",
        said(&unenrolled)
    );

    let created = token_for(&controller, "acme-web-01", "acme-paris").await;
    let token = created["token"].as_str().unwrap();
    assert_eq!(created["ca_fingerprint"], fingerprint.as_str());
    // One command; the token is pasted at its prompt, never on a command
    // line (where `ps` and the shell's history show it).
    let command = created["command"].as_str().unwrap();
    assert!(
        command.starts_with("sudo flotilla-agent join --controller https://")
            && command.ends_with(&format!("--ca-fingerprint {fingerprint}")),
        "{created}"
    );
    let windows = created["windows_command"].as_str().unwrap();
    assert!(
        windows.starts_with("flotilla-agent.exe join --controller https://"),
        "{created}"
    );
    assert!(
        !command.contains(token) && !windows.contains(token),
        "{created}"
    );
    // The list never shows the secret.
    let (_, listed) = controller.get("/api/v1/enrollments").await;
    assert_eq!(listed[0]["server"], "acme-web-01");
    assert!(!listed.to_string().contains(token), "{listed}");

    // A fingerprint that is not the controller's CA: nothing is sent, so
    // the token is not spent.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let refused = enroll(&config, &controller.http_url, token, &wrong).await;
    assert!(!refused.status.success());
    assert!(
        said(&refused).contains("holds no CA with fingerprint"),
        "{}",
        said(&refused)
    );
    assert!(!data.join("identity").join("agent.pem").exists());
    let unknown = enroll(&config, &controller.http_url, "not-a-token", &fingerprint).await;
    assert!(
        said(&unknown).contains("this enrollment token is unknown"),
        "{}",
        said(&unknown)
    );

    let enrolled = enroll(&config, &controller.http_url, token, &fingerprint).await;
    assert!(
        enrolled.status.success()
            && said(&enrolled).contains("enrolled as server acme-web-01 of site acme-paris"),
        "{}",
        said(&enrolled)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("identity").join("agent.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the agent's key is readable by others: {mode:o}"
        );
    }
    // Used once: a second try is refused, saying so.
    let again = enroll(&config, &controller.http_url, token, &fingerprint).await;
    assert!(!again.status.success());
    assert!(
        said(&again).contains("this enrollment token was used at"),
        "{}",
        said(&again)
    );

    // The agent starts and connects as the token said.
    let mut child = tokio::process::Command::new(binary("flotilla-agent"))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let server = controller
        .wait_for_server("acme-web-01", "online", |s| s["online"] == true)
        .await;
    assert_eq!(server["site"], "acme-paris");
    let (_, listed) = controller.get("/api/v1/enrollments").await;
    assert!(listed[0]["used_at"].is_string(), "{listed}");

    // The audit trail has the token's creation and the agent's enrollment.
    let (_, trail) = controller.get("/api/v1/audit").await;
    let actions: Vec<(String, String, i64)> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_i64().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("bootstrap", "POST /api/v1/enrollments", 201),
        ("agent acme-web-01", "POST /api/v1/enroll", 200),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, b, c)| (a.as_str(), b.as_str(), *c) == expected),
            "{expected:?} in {actions:?}"
        );
    }
    assert!(
        actions
            .iter()
            .any(|(actor, action, outcome)| actor.starts_with("agent at ")
                && action == "POST /api/v1/enroll"
                && *outcome == 403),
        "{actions:?}"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn connections_without_a_valid_identity_are_refused_with_the_reason_logged() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let ca = flotilla_tests::tls::ca();
    let url = &controller.grpc_url;

    // No client certificate: what the 60-line impostor had.
    let refused = refused_with(url, ca.grpc(), hello("acme-paris", "acme-web-01")).await;
    assert!(!refused.is_empty());
    log_says(&controller, "no client certificate").await;

    // A certificate from another CA.
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut other = rcgen::CertificateParams::default();
    other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::from_params(&other, &other_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from("urn:flotilla:agent:acme-paris:acme-web-01").unwrap(),
    )];
    let forged = params.signed_by(&key, &issuer).unwrap();
    let tls = ca.grpc().identity(tonic::transport::Identity::from_pem(
        forged.pem(),
        key.serialize_pem(),
    ));
    refused_with(url, tls, hello("acme-paris", "acme-web-01")).await;
    log_says(&controller, "was not issued by this controller's CA").await;

    // An expired one.
    let now = time::OffsetDateTime::now_utc();
    let (certificate, key) = ca.agent_certificate_valid(
        "acme-paris",
        "acme-web-01",
        now - time::Duration::days(2),
        now - time::Duration::days(1),
    );
    let tls = ca
        .grpc()
        .identity(tonic::transport::Identity::from_pem(certificate, key));
    refused_with(url, tls, hello("acme-paris", "acme-web-01")).await;
    log_says(&controller, "has expired").await;

    // A valid certificate whose Hello claims another server, or another site.
    for (site, server) in [("acme-paris", "acme-web-02"), ("evil-site", "acme-web-01")] {
        let refused = refused_with(
            url,
            ca.grpc_as("acme-paris", "acme-web-01"),
            hello(site, server),
        )
        .await;
        assert!(refused.starts_with("PermissionDenied"), "{refused}");
        assert!(
            refused.contains("certificate is for server acme-web-01 of site acme-paris"),
            "{refused}"
        );
        log_says(
            &controller,
            &format!("its Hello claimed server {server} of site {site}"),
        )
        .await;
    }
    assert!(
        controller.server("acme-web-01").await.is_none()
            && controller.server("acme-web-02").await.is_none(),
        "a refused connection records nothing"
    );

    // Revoked: its connection is closed, and it is refused from then on.
    let agent = SimulatedAgent::connect(url, "acme-paris", "acme-web-01", WEB)
        .await
        .unwrap();
    controller
        .wait_for_server("acme-web-01", "online", |s| s["online"] == true)
        .await;
    let operator = controller.token_for("olga", "operator").await;
    let forbidden = flotilla_tests::anonymous()
        .post(format!(
            "{}/api/v1/servers/acme-web-01/revoke",
            controller.http_url
        ))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403, "revoking is for admins");
    let revoked: Value = flotilla_tests::http()
        .post(format!(
            "{}/api/v1/servers/acme-web-01/revoke",
            controller.http_url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(revoked["disconnected"], true, "{revoked}");
    let server = controller
        .wait_for_server("acme-web-01", "offline", |s| s["online"] == false)
        .await;
    assert!(
        server["offline_reason"]
            .as_str()
            .unwrap()
            .contains("revoked by bootstrap"),
        "{server}"
    );
    drop(agent);
    let refused = SimulatedAgent::try_connect(url, "acme-paris", "acme-web-01", WEB)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap();
    assert!(refused.contains("revoked"), "{refused}");
    log_says(
        &controller,
        "server acme-web-01 of site acme-paris is revoked",
    )
    .await;
}

#[tokio::test]
async fn a_second_connection_with_the_same_identity_waits_until_the_first_misses_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let url = &controller.grpc_url;
    let first = SimulatedAgent::connect(url, "acme-paris", "acme-web-01", WEB)
        .await
        .unwrap();
    let before = controller
        .wait_for_server("acme-web-01", "online", |s| s["online"] == true)
        .await;
    let second = SimulatedAgent::try_connect(url, "acme-paris", "acme-web-01", WEB)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap();
    assert!(second.contains("already connected"), "{second}");
    log_says(&controller, "refused a second connection").await;
    // The first is untouched: still online, still heartbeating.
    let (_, sites) = controller.get("/api/v1/sites").await;
    assert_eq!(sites[0]["online"], 1, "{sites}");
    let after = controller.server("acme-web-01").await.unwrap();
    assert_eq!(after["connected_at"], before["connected_at"]);

    // Once the first goes silent, the second is taken.
    first.go_silent();
    let _second = SimulatedAgent::connect(url, "acme-paris", "acme-web-01", WEB)
        .await
        .unwrap();
    log_says(&controller, "a new connection replaces the previous one").await;
    controller
        .wait_for_server("acme-web-01", "online", |s| s["online"] == true)
        .await;
}

#[tokio::test]
async fn an_agent_renews_its_certificate_before_it_expires_and_keeps_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let controller =
        Controller::start_with_args(dir.path(), &["--agent-certificate-lifetime", "15s"]).await;
    let fingerprint = controller.ca_fingerprint.clone().unwrap();
    let mut agent = Agent::launch_with(
        dir.path(),
        "acme-paris",
        "acme-web-01",
        &controller.grpc_url,
        "<applications/>",
        100,
        "",
    )
    .await;
    // Enrolled for real, so that the controller's lifetime applies.
    agent.child.kill().await.unwrap();
    let created = token_for(&controller, "acme-web-01", "acme-paris").await;
    let config = agent.data.join("agent.toml");
    let enrolled = enroll(
        &config,
        &controller.http_url,
        created["token"].as_str().unwrap(),
        &fingerprint,
    )
    .await;
    assert!(enrolled.status.success(), "{}", said(&enrolled));
    let identity = agent.data.join("identity").join("agent.pem");
    let first = flotilla_proto::tls::AgentCertificate::from_pem(
        &std::fs::read_to_string(&identity).unwrap(),
    )
    .unwrap();
    assert!(first.not_after - first.not_before < 20, "{first:?}");
    agent.relaunch("flotilla-agent", &[]).await;
    controller
        .wait_for_server("acme-web-01", "online", |s| s["online"] == true)
        .await;

    let renewed = flotilla_tests::wait_up_to(
        std::time::Duration::from_secs(40),
        "the agent renews its certificate",
        async || {
            let now = flotilla_proto::tls::AgentCertificate::from_pem(
                &std::fs::read_to_string(&identity).map_err(|e| e.to_string())?,
            )?;
            if now.serial != first.serial {
                Ok(now)
            } else {
                Err(format!("{now:?}"))
            }
        },
    )
    .await;
    assert!(renewed.not_after > first.not_after, "{renewed:?}");
    assert_eq!(renewed.identity, first.identity);
    log_says(&controller, "agent certificate renewed").await;
    // After the first certificate has expired, the agent still connects.
    wait_until("the first certificate expires", async || {
        let now = chrono::Utc::now().timestamp();
        if now > first.not_after {
            Ok(())
        } else {
            Err(format!("{now} <= {}", first.not_after))
        }
    })
    .await;
    assert!(
        agent.log().contains("renewed this agent's certificate"),
        "{}",
        agent.log()
    );
    let before = controller.server("acme-web-01").await.unwrap();
    agent.relaunch("flotilla-agent", &[]).await;
    controller
        .wait_for_server("acme-web-01", "online again", |s| {
            s["online"] == true && s["connected_at"] != before["connected_at"]
        })
        .await;
}

#[tokio::test]
async fn an_admin_enrolls_and_revokes_a_server_from_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let browser = flotilla_tests::browser::Browser::start().await;
    browser.sign_in(&controller).await;
    browser
        .goto(&format!("{}/agents", controller.http_url))
        .await;
    browser
        .eval(
            "document.getElementById('server').value = 'acme-web-01'; \
             document.getElementById('site').value = 'acme-paris'; \
             document.getElementById('enroll').requestSubmit(); return true;",
        )
        .await;
    let command = wait_until("the enrollment command on the page", async || {
        let text = browser
            .eval("return document.getElementById('command').textContent")
            .await;
        match text.as_str() {
            Some(command) if command.starts_with("sudo flotilla-agent join ") => {
                Ok(command.to_owned())
            }
            _ => Err(text.to_string()),
        }
    })
    .await;
    let shown = browser
        .eval("return document.getElementById('fingerprint').textContent")
        .await;
    assert_eq!(shown, controller.ca_fingerprint.clone().unwrap().as_str());

    // The command, as shown, run on the server (its unit in a folder of
    // the test's: systemd does not run here).
    let (data, config) = unenrolled_agent(dir.path(), &controller);
    let token = browser
        .eval("return document.getElementById('token').textContent")
        .await;
    let token = token.as_str().unwrap().to_owned();
    assert!(!command.contains(&token), "{command}");
    let arguments = shown_command(&command);
    let enrolled = join(&config, &token, &arguments, &data.join("units")).await;
    assert!(enrolled.status.success(), "{}", said(&enrolled));
    let _agent = tokio::process::Command::new(binary("flotilla-agent"))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    controller
        .wait_for_server("acme-web-01", "online", |s| s["online"] == true)
        .await;

    // Revoked with two clicks on its row.
    browser
        .goto(&format!("{}/agents", controller.http_url))
        .await;
    let button = "document.querySelector('[data-revoke=\"acme-web-01\"]')";
    for _ in 0..2 {
        wait_until("the Revoke button", async || {
            let clicked = browser
                .eval(&format!(
                    "const b = {button}; if (!b) return false; b.click(); return true;"
                ))
                .await;
            if clicked == true {
                Ok(())
            } else {
                Err(clicked.to_string())
            }
        })
        .await;
    }
    let server = controller
        .wait_for_server("acme-web-01", "revoked", |s| s["online"] == false)
        .await;
    assert!(
        server["offline_reason"]
            .as_str()
            .unwrap()
            .contains("revoked by admin"),
        "{server}"
    );
    wait_until("the token shown as used", async || {
        let text = browser
            .eval("const r = document.querySelector('#tokens tbody tr'); return r && r.textContent")
            .await;
        match text.as_str() {
            Some(row) if row.contains(" from ") => Ok(()),
            _ => Err(text.to_string()),
        }
    })
    .await;
    browser.quit().await;
}

#[tokio::test]
async fn a_server_joins_in_one_command_twice_safely_then_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = flotilla_tests::publisher().public().to_hex();
    let controller =
        Controller::start_with_args(dir.path(), &["--publisher-key", &publisher]).await;
    let server = dir.path().join("acme-web-01");
    let config = server.join("etc").join("agent.toml");
    let data = server.join("data");
    let units = server.join("units");
    std::fs::create_dir_all(data.join("bin/config")).unwrap();
    std::fs::write(
        data.join("bin/config/applicationspath.config"),
        "<applications/>",
    )
    .unwrap();

    let created = token_for(&controller, "acme-web-01", "acme-paris").await;
    let token = created["token"].as_str().unwrap().to_owned();
    let mut arguments = shown_command(created["command"].as_str().unwrap());
    arguments.extend(["--data-dir".to_owned(), data.display().to_string()]);
    let joined = join(&config, &token, &arguments, &units).await;
    let first = said(&joined);
    assert!(joined.status.success(), "{first}");
    assert!(
        first.contains("enrolled as server acme-web-01 of site acme-paris")
            && first.contains("written: controller_url")
            && first.contains("1 trusted publisher key(s)"),
        "{first}"
    );
    // The configuration holds what the controller said: where agents
    // connect, the publisher to trust.
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains(&format!("controller_url = [\"{}\"]", controller.grpc_url))
            && written.contains(&format!("trusted_keys = [\"{publisher}\"]")),
        "{written}"
    );
    // The unit, as systemd would take it; systemd does not run here.
    let unit = units.join("flotilla-agent.service");
    flotilla_tests::systemd_verify(&unit);
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!("run --config {}", config.display())),
        "{text}"
    );
    assert!(
        first.contains("not started: systemd does not run here"),
        "{first}"
    );

    // The agent runs on what join wrote (its portal on a free port here).
    std::fs::write(
        &config,
        format!("{written}portal_listen = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let mut agent = tokio::process::Command::new(binary("flotilla-agent"))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    controller
        .wait_for_server("acme-web-01", "online", |s| s["online"] == true)
        .await;

    // Again: nothing to enroll (no token needed), nothing changed.
    let again = join(&config, "", &arguments, &units).await;
    let second = said(&again);
    assert!(again.status.success(), "{second}");
    assert!(
        second.contains("already enrolled as acme-web-01 of site acme-paris"),
        "{second}"
    );
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("portal_listen"),
        "kept"
    );

    // Leave: the unit goes, the controller revokes the server, the data stays.
    let left = tokio::process::Command::new(binary("flotilla-agent"))
        .arg("--config")
        .arg(&config)
        .args(["leave", "--unit-dir"])
        .arg(&units)
        .output()
        .await
        .unwrap();
    let leaving = said(&left);
    assert!(left.status.success(), "{leaving}");
    assert!(
        leaving.contains("certificate of acme-web-01 revoked by the controller"),
        "{leaving}"
    );
    assert!(!unit.exists());
    let revoked = controller
        .wait_for_server("acme-web-01", "revoked", |s| s["online"] == false)
        .await;
    assert!(
        revoked["offline_reason"]
            .as_str()
            .unwrap()
            .contains("revoked by acme-web-01 (flotilla-agent leave)"),
        "{revoked}"
    );
    assert!(data.join("bin/config/applicationspath.config").exists());
    assert!(config.exists());
    let identity = data.join("identity");
    assert!(!identity.join("agent.pem").exists(), "{leaving}");
    let aside: Vec<String> = std::fs::read_dir(&identity)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("agent.left-"))
        .collect();
    assert_eq!(aside.len(), 1, "the identity set aside, not deleted");
    let _ = agent.kill().await;
}
