//! TLS everywhere: the controller is its own certificate authority unless
//! told otherwise, agents trust only the CA they are given, and nothing
//! speaks plain text unless an explicit flag says so, on both sides.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use flotilla_proto::v1::agent_link_client::AgentLinkClient;
use flotilla_proto::v1::{AgentMessage, Hello, agent_message::Body};
use flotilla_tests::simulated::SimulatedAgent;
use flotilla_tests::{Agent, Controller, binary, wait_until};

const WEB: &[(&str, &str, &str)] = &[("ecommerce", "web", "5.8.0")];

fn hello(id: &str) -> AgentMessage {
    AgentMessage {
        body: Some(Body::Hello(Hello {
            protocol_version: flotilla_proto::PROTOCOL_VERSION,
            server_id: id.into(),
            hostname: id.into(),
            os: "linux".into(),
            agent_version: "1.0.0".into(),
            site: "acme-paris".into(),
            ..Hello::default()
        })),
    }
}

#[tokio::test]
async fn the_controller_makes_its_own_ca_once_and_agents_that_trust_it_connect() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("own-tls");
    let tls_arg = tls_dir.display().to_string();
    let mut controller = Controller::start_with_args(dir.path(), &["--tls-dir", &tls_arg]).await;
    assert!(
        controller.grpc_url.starts_with("https://"),
        "{}",
        controller.grpc_url
    );
    assert!(
        controller.http_url.starts_with("https://"),
        "{}",
        controller.http_url
    );

    // What it printed is the fingerprint of the CA it wrote.
    let (_, certificates) =
        flotilla_proto::tls::read_certificates(&tls_dir.join("ca.pem")).unwrap();
    let printed = controller.ca_fingerprint.clone().unwrap();
    assert_eq!(printed, flotilla_proto::tls::fingerprint(&certificates[0]));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tls_dir.join("ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the CA key is readable by others: {mode:o}"
        );
    }

    // An agent given that CA connects and reports.
    let agents = dir.path().join("agents");
    let mut web = Agent::launch_with(
        &agents,
        "acme-paris",
        "acme-web-01",
        &controller.grpc_url,
        "<applications/>",
        100,
        // After the harness's controller_ca line, which this one replaces.
        "",
    )
    .await;
    // The harness wrote the test CA, which this controller does not use:
    // the agent is refused until it is given the controller's own.
    let log_says = async |agent: &Agent, text: &str| {
        wait_until(&format!("the agent's log says {text:?}"), async || {
            let log = agent.log();
            if log.contains(text) { Ok(()) } else { Err(log) }
        })
        .await
    };
    log_says(&web, "UnknownIssuer").await;
    let mut admin = reqwest::header::HeaderMap::new();
    admin.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", flotilla_tests::admin_token())
            .parse()
            .unwrap(),
    );
    let own_client = reqwest::Client::builder()
        .default_headers(admin)
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(&std::fs::read(tls_dir.join("ca.pem")).unwrap())
                .unwrap(),
        )
        .build()
        .unwrap();
    let status = own_client
        .get(format!(
            "{}/api/v1/servers/acme-web-01",
            controller.http_url
        ))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        status, 404,
        "an agent that does not trust the controller is not recorded"
    );

    // Enrolled with this controller, as an operator does it: a token, then
    // `flotilla-agent enroll` pinning the CA's fingerprint; the agent then
    // trusts the CA enrollment wrote (no controller_ca line).
    let created: serde_json::Value = own_client
        .post(format!("{}/api/v1/enrollments", controller.http_url))
        .json(&serde_json::json!({"server": "acme-web-01", "site": "acme-paris"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["ca_fingerprint"], printed.as_str(), "{created}");
    let config = web.data.join("agent.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .lines()
        .filter(|line| !line.starts_with("controller_ca"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, text).unwrap();
    let enrolled = tokio::process::Command::new(binary("flotilla-agent"))
        .arg("--config")
        .arg(&config)
        .args(["enroll", "--controller", &controller.http_url])
        .env(
            "FLOTILLA_ENROLLMENT_TOKEN",
            created["token"].as_str().unwrap(),
        )
        .args(["--ca-fingerprint", &printed])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&enrolled.stdout);
    assert!(
        enrolled.status.success()
            && said.contains("enrolled as server acme-web-01 of site acme-paris"),
        "{said}{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    web.relaunch("flotilla-agent", &[]).await;
    let online = async |controller: &Controller| {
        let client = own_client.clone();
        wait_until("acme-web-01 online over TLS", async || {
            let server: serde_json::Value = client
                .get(format!(
                    "{}/api/v1/servers/acme-web-01",
                    controller.http_url
                ))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            if server["online"] == true {
                Ok(())
            } else {
                Err(server.to_string())
            }
        })
        .await
    };
    online(&controller).await;

    // Restarted, it keeps its CA: the same fingerprint, the agent reconnects.
    let (grpc, http) = (controller.grpc_addr(), controller.http_addr());
    controller.kill().await;
    let _ = controller.child.wait().await;
    let controller = Controller::start_program(
        &binary("flotilla-controller"),
        dir.path(),
        &grpc,
        &http,
        flotilla_tests::HEARTBEAT_INTERVAL_MS,
        flotilla_tests::HEARTBEAT_TIMEOUT_MS,
        &["--tls-dir", &tls_arg],
    )
    .await;
    assert_eq!(controller.ca_fingerprint.as_deref(), Some(printed.as_str()));
    online(&controller).await;

    // A client that trusts another CA (the test CA) is refused.
    let refused = tonic::transport::Endpoint::from_shared(controller.grpc_url.clone())
        .unwrap()
        .tls_config(flotilla_tests::tls::ca().grpc())
        .unwrap()
        .connect()
        .await
        .expect_err("another CA must not be trusted");
    assert!(
        format!("{refused:?}").contains("UnknownIssuer"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn plain_text_reaches_nothing_on_a_tls_controller() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;

    // gRPC in plain text to the TLS port: no stream, nothing recorded.
    let plain = controller.grpc_url.replace("https://", "http://");
    let attempt: Result<(), String> = tokio::time::timeout(Duration::from_secs(10), async {
        let channel = tonic::transport::Endpoint::from_shared(plain)
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let mut client = AgentLinkClient::new(channel);
        client
            .session(tokio_stream::iter(vec![hello("plain-01")]))
            .await
            .map(|_| ())
            .map_err(|status| status.to_string())
    })
    .await
    .expect("a plain-text client is answered, not left hanging");
    assert!(attempt.is_err(), "a plain-text session was opened");

    // HTTP in plain text to the HTTPS port: no answer.
    flotilla_proto::tls::install_crypto_provider();
    let http = controller.http_url.replace("https://", "http://");
    let answer = reqwest::Client::new()
        .get(format!("{http}/api/v1/servers"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(answer.is_err(), "plain HTTP was answered: {answer:?}");
    assert!(controller.server("plain-01").await.is_none());

    // The agent refuses to start on a plain-text URL unless told it may.
    let data = dir.path().join("plain-agent");
    std::fs::create_dir_all(&data).unwrap();
    let config = data.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "site = \"acme\"\nserver_id = \"plain-01\"\ndata_dir = {:?}\ncontroller_url = \"{}\"\nportal_listen = \"127.0.0.1:0\"\n",
            data.display().to_string(),
            controller.grpc_url.replace("https://", "http://"),
        ),
    )
    .unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(binary("flotilla-agent"))
            .arg("--config")
            .arg(&config)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&config.display().to_string())
            && stderr.contains("is plain text")
            && stderr.contains("insecure_plaintext = true"),
        "{stderr}"
    );
}

#[tokio::test]
async fn plain_text_is_served_only_behind_the_explicit_flag_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start_with_args(dir.path(), &["--insecure-plaintext"]).await;
    assert!(
        controller.grpc_url.starts_with("http://"),
        "{}",
        controller.grpc_url
    );
    assert!(controller.ca_fingerprint.is_none());
    wait_until("the controller's log warns of plain text", async || {
        let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
        if log.contains("--insecure-plaintext") && log.contains("plain text") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    assert!(
        !dir.path().join("tls").exists(),
        "no CA is made for plain text"
    );

    // An agent that says so explicitly connects, and warns too.
    let agent = Agent::launch_with(
        dir.path(),
        "acme",
        "plain-01",
        &controller.grpc_url,
        "<applications/>",
        100,
        "insecure_plaintext = true",
    )
    .await;
    controller
        .wait_for_server("plain-01", "online", |s| s["online"] == true)
        .await;
    assert!(
        agent.log().contains("insecure_plaintext"),
        "{}",
        agent.log()
    );

    // The dashboard says it on every page, in a real browser.
    let browser = flotilla_tests::browser::Browser::start().await;
    for path in ["/", "/releases", "/rollouts", "/database"] {
        browser
            .goto(&format!("{}{path}", controller.http_url))
            .await;
        let banner = wait_until(&format!("the plain-text banner on {path}"), async || {
            let text = browser
                .eval("const b = document.getElementById('plaintext'); return b && b.textContent")
                .await;
            text.as_str().map(str::to_owned).ok_or(text.to_string())
        })
        .await;
        assert!(banner.contains("--insecure-plaintext"), "{banner}");
    }
    browser.quit().await;
    // And a simulated agent in plain text connects as well.
    let _sim = SimulatedAgent::connect(&controller.grpc_url, "acme", "plain-02", WEB)
        .await
        .unwrap();
    controller
        .wait_for_server("plain-02", "online", |s| s["online"] == true)
        .await;
}
