//! The second security round (issue 25): what an outside probe got through,
//! each tried again as the attacker did.

#![allow(clippy::unwrap_used)]

use flotilla_tests::browser::Browser;
use flotilla_tests::{Controller, anonymous};
use serde_json::json;

/// `next=` after signing in goes only to a page of the dashboard: the
/// forms a browser reads as another host (`/\host`, `/<tab>/host`, `//host`,
/// a whole URL) all land on the dashboard's home instead.
#[tokio::test]
async fn signing_in_never_sends_the_browser_to_another_site() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let browser = Browser::start().await;
    let origin = controller.http_url.clone();
    for next in [
        "/%5Cevil.example",
        "/%09/evil.example",
        "//evil.example",
        "/%5C%5Cevil.example/x",
        "https://evil.example/",
        "%2F%5Cevil.example",
        "javascript:alert(1)",
    ] {
        browser
            .sign_in_at(&controller, &format!("/login?next={next}"))
            .await;
        let at = browser.eval("return location.href").await;
        let at = at.as_str().unwrap_or_default();
        assert!(
            at.starts_with(&format!("{origin}/")),
            "next={next} sent the browser to {at}"
        );
    }
    // A page of the dashboard is still where it goes back to.
    browser
        .sign_in_at(&controller, "/login?next=%2Faudit%3Factor%3Dadmin")
        .await;
    let at = browser.eval("return location.href").await;
    assert_eq!(at, json!(format!("{origin}/audit?actor=admin")));
    browser.quit().await;
}

/// A line break in a sign-in name or in an agent's Hello is written escaped:
/// nobody forges a line of the controller's log.
#[tokio::test]
async fn text_from_outside_cannot_forge_a_line_of_the_log() {
    use flotilla_proto::v1::agent_link_client::AgentLinkClient;
    use flotilla_proto::v1::{AgentMessage, Hello, agent_message::Body};

    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let refused = anonymous()
        .post(format!("{}/api/v1/session", controller.http_url))
        .json(&json!({"name": "nobody\nFORGED sign-in INFO admin signed in", "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let channel =
        flotilla_tests::tls::grpc_channel(&controller.grpc_url, "acme-paris", "acme-web-01").await;
    let hello = AgentMessage {
        body: Some(Body::Hello(Hello {
            // A version it does not speak: refused, and logged with the id.
            protocol_version: 999,
            server_id: "acme-web-01\r\nFORGED hello".into(),
            hostname: "web01\nFORGED hostname".into(),
            site: "acme-paris".into(),
            agent_version: "1.0\nFORGED version".into(),
            ..Hello::default()
        })),
    };
    let refused = AgentLinkClient::new(channel)
        .session(tokio_stream::iter(vec![hello]))
        .await;
    assert!(refused.is_err(), "a Hello of protocol version 999");

    let log = flotilla_tests::wait_until("the refusals in the log", async || {
        let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
        match log.contains("sign-in refused") && log.contains("FORGED hello") {
            true => Ok(log),
            false => Err(log),
        }
    })
    .await;
    for line in log.lines() {
        assert!(!line.starts_with("FORGED"), "a forged line: {line}\n{log}");
    }
    assert!(log.contains("nobody\\nFORGED sign-in"), "{log}");
}

/// The webhook and package allowlists name a port too, and a host name on
/// them that resolves to an internal address is refused.
#[tokio::test]
async fn allowlists_hold_the_port_and_keep_names_off_internal_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start_with_args(
        dir.path(),
        &[
            "--webhook-host",
            "localhost:*,hooks.example",
            "--package-host",
            "localhost:8443",
        ],
    )
    .await;
    let http = flotilla_tests::http();
    let rollout = async |webhook: &str| -> (u16, String) {
        let response = http
            .post(format!("{}/api/v1/rollouts", controller.http_url))
            .json(&json!({"release": "2026.12", "strategy": {"notice": {"webhook_url": webhook, "lead_seconds": 4}}}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let (status, body) = rollout("https://localhost:9443/notice").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("strategy.notice.webhook_url: the host \\\"localhost\\\" resolves to the internal address"),
        "{body}"
    );
    let (status, body) = rollout("https://hooks.example:8443/notice").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("on port 8443 is not on the allowlist"),
        "{body}"
    );

    let sha = "a".repeat(64);
    let publish = http
        .post(format!("{}/api/v1/releases", controller.http_url))
        .json(&json!({"version": "2026.12", "packages": [{
            "sha256": sha, "signature": "b".repeat(128), "url": "https://localhost:8443/p.zip",
            "module": "ecommerce", "version": "5.9.0", "kind": "web"}]}))
        .send()
        .await
        .unwrap();
    let status = publish.status().as_u16();
    let body = publish.text().await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("resolves to the internal address"), "{body}");
}

/// The enrollment token is never an argument: `enroll --token` is refused
/// before anything is sent, and the dashboard's command does not carry it.
#[tokio::test]
async fn the_enrollment_token_never_goes_on_a_command_line() {
    let refused = tokio::process::Command::new(flotilla_tests::binary("flotilla-agent"))
        .args([
            "enroll",
            "--controller",
            "https://127.0.0.1:9",
            "--token",
            "secret",
        ])
        .args(["--ca-fingerprint", "sha256:00"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("unexpected argument '--token'"), "{said}");
}

/// Reads what the controller answers on `stream` until it closes it, or
/// `patience` has passed: the bytes, and whether it was closed.
async fn answer_of(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    patience: std::time::Duration,
) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut said = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&said).into_owned(), true),
            Ok(Ok(n)) => said.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&said).into_owned(), false),
        }
    }
}

/// An anonymous request's body is not read beyond a small size: a request
/// declaring 2 MB is answered at once, before any of it is sent.
#[tokio::test]
async fn an_anonymous_body_is_refused_before_it_is_read() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let loopback = std::net::Ipv4Addr::LOCALHOST;
    let mut stream = flotilla_tests::tls::raw_https(&controller.http_url, loopback)
        .await
        .unwrap();
    let head = format!(
        "POST /api/v1/rollouts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (said, _) = answer_of(&mut stream, std::time::Duration::from_secs(20)).await;
    assert!(said.starts_with("HTTP/1.1 413"), "{said}");
    assert!(said.contains("more only once signed in"), "{said}");

    // A small anonymous body is still read and refused for what it lacks.
    let refused = anonymous()
        .post(format!("{}/api/v1/rollouts", controller.http_url))
        .json(&json!({"release": "x".repeat(40_000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // Signed in, a route that takes a body takes up to 2 MiB.
    let big = flotilla_tests::http()
        .post(format!("{}/api/v1/rollouts", controller.http_url))
        .json(&json!({"release": "x".repeat(1024 * 1024)}))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 404, "read: no release has that name");
}

/// A client that never finishes its request head is cut off after the
/// head's time limit, and one source cannot hold more connections than its
/// cap: the next is closed at once, while another source's still work.
#[tokio::test]
async fn slow_clients_are_cut_off_and_one_source_holds_few_connections() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start_with_args(
        dir.path(),
        &[
            "--request-head-seconds",
            "2",
            "--http-connections-per-source",
            "4",
        ],
    )
    .await;
    // The slow client, from an address of its own.
    let source = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut stream = flotilla_tests::tls::raw_https(&controller.http_url, source)
            .await
            .unwrap();
        stream
            .write_all(b"GET /api/v1/servers HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // A fifth from the same address: closed before its handshake ends.
    let fifth = flotilla_tests::tls::raw_https(&controller.http_url, source).await;
    assert!(
        fifth.is_err(),
        "a fifth connection from one source was served"
    );
    // Another source is served meanwhile.
    let (status, _) = controller.get("/api/v1/servers").await;
    assert_eq!(status, 200);
    // The four are closed once their heads are late.
    for stream in &mut slow {
        let (_, closed) = answer_of(stream, std::time::Duration::from_secs(30)).await;
        assert!(closed, "a connection whose head never ended is still open");
    }
    // Their places are given back.
    let (status, _) = controller.get("/api/v1/servers").await;
    assert_eq!(status, 200);
}

/// Anonymous refusals do not flood the audit trail: twenty requests with
/// 30 KB paths make one row at once (the first, its path cut short), the
/// rest are counted into one row at the minute's end.
#[tokio::test]
async fn anonymous_refusals_are_counted_not_written_one_row_each() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let long = "x".repeat(30_000);
    for _ in 0..20 {
        let refused = anonymous()
            .get(format!("{}/api/v1/servers/{long}", controller.http_url))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
    }
    let (status, rows) = controller
        .get("/api/v1/audit?actor=anonymous&action=servers")
        .await;
    assert_eq!(status, 200);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0]["target"].as_str().unwrap().len() <= 300,
        "{}",
        rows[0]
    );
    assert_eq!(rows[0]["action"], "GET /api/v1/servers/{id}");
}

/// A client of the dashboard from the loopback address `from`, standing
/// for a source of its own.
fn client_from(from: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(flotilla_tests::tls::ca().pem.as_bytes())
                .unwrap(),
        )
        .local_address(std::net::IpAddr::from(from))
        .build()
        .unwrap()
}

/// Failed sign-ins hold an account back, twice as long each time past the
/// first few, whatever the source; the right password waits too, then
/// works. An unknown name takes as long to refuse as a known one.
#[tokio::test]
async fn sign_ins_are_throttled_and_an_unknown_name_is_refused_as_slowly() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let password = controller.admin_password.clone().unwrap();
    let sign_in = async |client: &reqwest::Client, name: &str, password: &str| {
        let started = std::time::Instant::now();
        let response = client
            .post(format!("{}/api/v1/session", controller.http_url))
            .json(&json!({"name": name, "password": password}))
            .send()
            .await
            .unwrap();
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status().as_u16(), retry, started.elapsed())
    };

    // The time a refusal takes, known and unknown names alike.
    let timing = client_from([127, 0, 0, 5]);
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for n in 0..3 {
        let (status, _, took) = sign_in(&timing, "admin", "not the password").await;
        assert_eq!(status, 401);
        known.push(took);
        let (status, _, took) = sign_in(&timing, &format!("nobody-{n}"), "x").await;
        assert_eq!(status, 401);
        unknown.push(took);
    }
    known.sort();
    unknown.sort();
    assert!(
        unknown[1] * 3 >= known[1],
        "an unknown name is refused in {:?}, a known one in {:?}: the name can be told apart",
        unknown[1],
        known[1]
    );

    // The fourth failure holds the account back, from any source.
    let (status, _, _) = sign_in(&client_from([127, 0, 0, 6]), "admin", "wrong again").await;
    assert_eq!(status, 401);
    let (status, retry, _) = sign_in(&client_from([127, 0, 0, 7]), "admin", &password).await;
    assert_eq!(status, 429, "the right password waits too");
    let retry: u64 = retry.unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    tokio::time::sleep(std::time::Duration::from_secs(retry)).await;
    let (status, _, _) = sign_in(&client_from([127, 0, 0, 7]), "admin", &password).await;
    assert_eq!(status, 200, "after the wait, the right password works");
    // Another account was never held back.
    let (status, _, _) = sign_in(&client_from([127, 0, 0, 8]), "someone", "x").await;
    assert_eq!(status, 401);
}
