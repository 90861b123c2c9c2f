//! Hostile input on every door: gRPC messages too large or not what they
//! claim to be, and names and versions carrying shell or SQL
//! metacharacters. Each is refused with a clear error, changes nothing, and
//! leaves the controller serving everyone else.

#![allow(clippy::unwrap_used)]

use flotilla_proto::v1::agent_link_client::AgentLinkClient;
use flotilla_proto::v1::{AgentMessage, ControllerMessage, Heartbeat, Hello, agent_message::Body};
use flotilla_tests::simulated::SimulatedAgent;
use flotilla_tests::{Controller, wait_until};
use serde_json::{Value, json};

const WEB: &[(&str, &str, &str)] = &[("ecommerce", "web", "5.8.0")];

#[tokio::test]
async fn oversized_and_malformed_grpc_messages_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let url = &controller.grpc_url;

    // A Hello of 5 MB, above the 4 MB limit.
    let channel = flotilla_tests::tls::grpc_channel(url, "acme-paris", "acme-web-01").await;
    let huge = AgentMessage {
        body: Some(Body::Hello(Hello {
            protocol_version: flotilla_proto::PROTOCOL_VERSION,
            server_id: "acme-web-01".into(),
            hostname: "x".repeat(5 * 1024 * 1024),
            site: "acme-paris".into(),
            ..Hello::default()
        })),
    };
    let refused = AgentLinkClient::new(channel.clone())
        .session(tokio_stream::iter(vec![huge]))
        .await
        .expect_err("a 5 MB message must be refused");
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(
        refused.message().contains("the limit is: 4194304 bytes"),
        "{refused:?}"
    );

    // Bytes that are not an AgentMessage: a Heartbeat where the stream
    // expects AgentMessages (field 1 is a number, not a Hello).
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<Heartbeat, ControllerMessage> =
        tonic_prost::ProstCodec::default();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/flotilla.v1.AgentLink/Session");
    let malformed = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(vec![Heartbeat {
                sent_at_unix_ms: 42,
            }])),
            path,
            codec,
        )
        .await
        .expect_err("a malformed message must be refused");
    assert!(
        matches!(
            malformed.code(),
            tonic::Code::Internal | tonic::Code::InvalidArgument
        ),
        "{malformed:?}"
    );
    assert!(
        controller.server("acme-web-01").await.is_none(),
        "nothing is recorded"
    );

    // The controller serves everyone else as before.
    let _agent = SimulatedAgent::connect(url, "acme-paris", "acme-web-02", WEB)
        .await
        .unwrap();
    controller
        .wait_for_server("acme-web-02", "online", |s| s["online"] == true)
        .await;
}

#[tokio::test]
async fn names_and_versions_with_shell_or_sql_metacharacters_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let http = flotilla_tests::http();
    let post = async |path: &str, body: Value| -> (u16, Value) {
        let response = http
            .post(format!("{}{path}", controller.http_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    };
    let tricks = [
        "acme'; DROP TABLE servers;--",
        "$(reboot)",
        "`id`",
        "a && rm -rf /",
        "../../etc/passwd",
        "acme\nweb",
        "acme%00",
    ];
    for trick in tricks {
        let (status, body) = post(
            "/api/v1/enrollments",
            json!({"server": trick, "site": "acme-paris"}),
        )
        .await;
        assert_eq!(status, 400, "{trick}: {body}");
        assert!(
            body["message"].as_str().unwrap().starts_with("server: "),
            "{body}"
        );
        let (status, body) = post(
            "/api/v1/enrollments",
            json!({"server": "acme-web-01", "site": trick}),
        )
        .await;
        assert_eq!(status, 400, "{trick}: {body}");
        assert!(
            body["message"].as_str().unwrap().starts_with("site: "),
            "{body}"
        );
        let (status, body) = post(
            "/api/v1/releases",
            json!({"version": trick, "notes": "", "packages": []}),
        )
        .await;
        assert_eq!(status, 400, "{trick}: {body}");
        let (status, body) = post(
            "/api/v1/rollouts",
            json!({"release": "2026.12", "sites": [trick]}),
        )
        .await;
        assert!((400..500).contains(&status), "{trick}: {status} {body}");
        let encoded: String = trick.bytes().map(|b| format!("%{b:02X}")).collect();
        let (status, body) = controller.get(&format!("/api/v1/servers/{encoded}")).await;
        assert_eq!(status, 404, "{trick}: {body}");
    }

    // A method a path does not have is 405 with what it has; a path that
    // does not parse is a JSON 400 like every other refusal.
    let traced = http
        .request(
            reqwest::Method::from_bytes(b"TRACE").unwrap(),
            format!("{}/api/v1/session", controller.http_url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status(), 405);
    assert_eq!(traced.headers()["allow"], "GET, POST, DELETE");
    let (status, body) = controller.get("/api/v1/rollouts/not-a-number").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad_request", "{body}");

    // Nothing was created, and every table still answers.
    for path in [
        "/api/v1/servers",
        "/api/v1/releases",
        "/api/v1/rollouts",
        "/api/v1/enrollments",
    ] {
        let (status, body) = controller.get(path).await;
        assert_eq!((status, body.clone()), (200, json!([])), "{path}");
    }
    wait_until("the controller still serves", async || {
        let (status, _) = controller.get("/api/v1/sites").await;
        if status == 200 {
            Ok(())
        } else {
            Err(status.to_string())
        }
    })
    .await;
}

/// A refusal sent before the handler reads the body (a wrong content type,
/// a query that does not parse, no credentials) still reaches the client
/// whole, however much body it was still sending, and a body over the
/// limit is refused with 413 rather than a cut connection.
#[tokio::test]
async fn refusals_reach_a_client_still_sending_its_body() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let big = "x".repeat(1536 * 1024);
    // Before the caller is known, a body is read only up to a small bound.
    let anonymous_big = "x".repeat(300 * 1024);
    let cases = [
        (
            flotilla_tests::http(),
            "/api/v1/releases",
            "text/plain",
            415,
            &big,
        ),
        (
            flotilla_tests::http(),
            "/api/v1/rollouts?dry_run=maybe",
            "application/json",
            400,
            &big,
        ),
        // Anonymous, a body over the small limit before authentication:
        // refused for its size, unread.
        (
            flotilla_tests::anonymous(),
            "/api/v1/rollouts",
            "application/json",
            413,
            &anonymous_big,
        ),
    ];
    for round in 0..5 {
        for (client, path, content_type, want, body) in &cases {
            let response = client
                .post(format!("{}{path}", controller.http_url))
                .header("content-type", *content_type)
                .body((*body).clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("round {round}, {path}: the connection was cut: {e:?}"));
            assert_eq!(response.status().as_u16(), *want, "{path}");
            let body: Value = response.json().await.unwrap();
            assert!(body["message"].is_string(), "{body}");
        }
    }
    let too_large = flotilla_tests::http()
        .post(format!("{}/api/v1/releases", controller.http_url))
        .header("content-type", "application/json")
        .body("x".repeat(3 * 1024 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);
    let body: Value = too_large.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large", "{body}");
}
