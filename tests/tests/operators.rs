//! Operators and roles: every request is authenticated and authorized,
//! browsers' changes carry their CSRF token, and what is recorded is who
//! signed in, never what a header claims.

#![allow(clippy::unwrap_used)]

use flotilla_tests::{Controller, Session, anonymous};
use serde_json::{Value, json};

const ROLES: [&str; 4] = ["viewer", "operator", "publisher", "admin"];

/// Whether `role` may call an operation that needs `need`.
fn grants(role: &str, need: &str) -> bool {
    role == "admin" || need == "viewer" || role == need
}

/// What an operation needs, from its `security` in the document: `None`
/// when it declares nothing.
fn need(operation: &Value) -> Option<String> {
    let first = operation["security"].as_array()?.first()?.as_object()?;
    if first.is_empty() {
        return Some("public".to_owned());
    }
    first.values().next()?[0].as_str().map(str::to_owned)
}

#[tokio::test]
async fn every_operation_declares_its_role_and_each_role_gets_exactly_that() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let mut tokens = Vec::new();
    for role in ROLES {
        tokens.push((role, controller.token_for(&format!("a-{role}"), role).await));
    }
    let (status, document) = controller.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["token"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["session"]["in"], "cookie", "{schemes}");

    let client = anonymous();
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        // Dummy values: the gate answers before any parameter is read.
        let url = format!(
            "{}{}",
            controller.http_url,
            path.split('/')
                .map(|part| if part.starts_with('{') { "999" } else { part })
                .collect::<Vec<_>>()
                .join("/")
        );
        for (method, operation) in item.as_object().unwrap() {
            let Ok(method) = method.to_uppercase().parse::<reqwest::Method>() else {
                continue;
            };
            let need = need(operation)
                .unwrap_or_else(|| panic!("{method} {path} declares no role: {operation}"));
            let call = async |token: Option<&str>| {
                let mut request = client.request(method.clone(), &url);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
                    request = request.json(&json!({}));
                }
                request.send().await.unwrap().status().as_u16()
            };
            let status = call(None).await;
            match need.as_str() {
                "public" => assert!(status != 401 && status != 403, "{method} {path}: {status}"),
                _ => assert_eq!(status, 401, "{method} {path} without credentials"),
            }
            for (role, token) in &tokens {
                let status = call(Some(token)).await;
                if need == "public" || grants(role, &need) {
                    assert!(
                        status != 401 && status != 403,
                        "{method} {path} as {role} (needs {need}): {status}"
                    );
                } else {
                    assert_eq!(status, 403, "{method} {path} as {role} (needs {need})");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} operations in the document");

    // The live stream is not in the document: viewers and up.
    let events = client
        .get(format!("{}/api/v1/events", controller.http_url))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 401);
    let events = client
        .get(format!("{}/api/v1/events", controller.http_url))
        .bearer_auth(&tokens[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);

    // A revoked token is refused from then on.
    let revoked = flotilla_tests::http()
        .delete(format!("{}/api/v1/tokens/a-viewer", controller.http_url))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let refused = client
        .get(format!("{}/api/v1/servers", controller.http_url))
        .bearer_auth(&tokens[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

/// Signs in; returns the session cookie (`name=value`), the whole
/// `Set-Cookie` header and the CSRF token.
async fn sign_in(controller: &Controller, password: &str) -> Session {
    Session::sign_in(&anonymous(), &controller.http_url, "admin", password).await
}

#[tokio::test]
async fn a_browser_session_needs_its_csrf_token_for_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let password = controller.admin_password.clone().unwrap();
    let url = |path: &str| format!("{}{path}", controller.http_url);

    let wrong = anonymous()
        .post(url("/api/v1/session"))
        .json(&json!({"name": "admin", "password": "not-the-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    let Session {
        cookie,
        set_cookie,
        csrf,
    } = sign_in(&controller, &password).await;
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    let client = anonymous();
    let read = client
        .get(url("/api/v1/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let me: Value = read.json().await.unwrap();
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("admin"), Some("admin"))
    );

    // What another site's page can send: the cookie, no token, its origin.
    let forged = client
        .post(url("/api/v1/servers/acme-web-01/modules/ecommerce/install"))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let body: Value = forged.json().await.unwrap();
    assert_eq!(body["error"], "csrf", "{body}");
    let wrong_token = client
        .post(url("/api/v1/tokens"))
        .header("cookie", &cookie)
        .header("x-csrf-token", "0000")
        .json(&json!({"name": "forged", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_token.status(), 403);

    // The page's own request, with the token: through, and recorded under
    // the account, whatever a header claims.
    let created = client
        .post(url("/api/v1/tokens"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("x-flotilla-actor", "ceo@acme.example (spoofed)")
        .json(&json!({"name": "pipeline", "role": "publisher", "expires_in_days": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let secret = created.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, tokens) = controller.get("/api/v1/tokens").await;
    let pipeline = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "pipeline")
        .unwrap();
    assert_eq!(pipeline["created_by"], "admin", "{pipeline}");
    assert!(!pipeline["expires_at"].is_null());
    assert!(
        !tokens.to_string().contains(&secret),
        "a secret is never shown again"
    );

    // Signed out, the cookie is worth nothing.
    let out = client
        .delete(url("/api/v1/session"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let after = client
        .get(url("/api/v1/servers"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);

    // No secret reached the log.
    let log = std::fs::read_to_string(&controller.log).unwrap();
    assert!(log.contains("sign-in refused"), "{log}");
    for secret in [
        password.as_str(),
        secret.as_str(),
        csrf.as_str(),
        flotilla_tests::admin_token(),
    ] {
        assert!(!log.contains(secret), "a secret is in the controller's log");
    }
    assert!(!log.contains(cookie.split('=').nth(1).unwrap()));
}

#[tokio::test]
async fn with_an_admin_token_file_no_admin_password_is_made_or_printed() {
    let dir = tempfile::tempdir().unwrap();
    // The harness's start gives --admin-token-file, then makes the account
    // `admin` itself with that token: the controller made none.
    let controller = Controller::start(dir.path()).await;
    assert!(
        !controller
            .printed
            .iter()
            .any(|line| line.contains("password")),
        "{:?}",
        controller.printed
    );
    let (_, accounts) = controller.get("/api/v1/accounts").await;
    let names: Vec<&str> = accounts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin"], "only the harness's: {accounts}");
}

#[tokio::test]
async fn the_first_admins_password_is_never_printed_and_must_be_changed_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut controller =
        Controller::start_as_a_person(dir.path(), "127.0.0.1:0", "127.0.0.1:0").await;
    let first = controller.admin_password.clone().unwrap();
    assert!(first.len() >= 16, "{first}");
    // In a file only the controller's account reads, never on its output.
    let file = dir.path().join("initial-admin-password");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(
        !controller.printed.iter().any(|line| line.contains(&first)),
        "{:?}",
        controller.printed
    );
    let (grpc, http) = (controller.grpc_addr(), controller.http_addr());
    controller.kill().await;
    let _ = controller.child.wait().await;
    let controller = Controller::start_as_a_person(dir.path(), &grpc, &http).await;
    assert!(
        controller.admin_password.is_none(),
        "made again at a restart"
    );
    let log = std::fs::read_to_string(&controller.log).unwrap();
    assert!(!log.contains(&first), "the password is in the log");

    // Signed in with it, nothing but changing it is allowed.
    let session = sign_in(&controller, &first).await;
    let signed_in = |request: reqwest::RequestBuilder| {
        request
            .header("cookie", &session.cookie)
            .header("x-csrf-token", &session.csrf)
    };
    let url = |path: &str| format!("{}{path}", controller.http_url);
    let (status, me) = {
        let r = signed_in(anonymous().get(url("/api/v1/session")))
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200);
    assert_eq!(me["must_change_password"], true, "{me}");
    let blocked = signed_in(anonymous().get(url("/api/v1/servers")))
        .send()
        .await
        .unwrap();
    assert_eq!(blocked.status(), 403);
    let body: Value = blocked.json().await.unwrap();
    assert_eq!(body["error"], "password_change_required", "{body}");
    let change = async |current: &str, new: &str| {
        signed_in(anonymous().put(url("/api/v1/session/password")))
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(change("not it", "a new long password").await, 403);
    assert_eq!(change(&first, "short").await, 400);
    assert_eq!(change(&first, &first).await, 400, "the same password");
    assert!(file.exists(), "kept until it is changed");
    let password = "the admin's own password";
    assert_eq!(change(&first, password).await, 204);
    assert!(
        !file.exists(),
        "the file is removed once the password is changed"
    );
    // The same session goes on; the old password no longer works.
    let read = signed_in(anonymous().get(url("/api/v1/servers")))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let old = anonymous()
        .post(url("/api/v1/session"))
        .json(&json!({"name": "admin", "password": first}))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
    let session = sign_in(&controller, password).await;

    // An admin makes an operator's account; it signs in with its role.
    let create = async |password: &str| {
        anonymous()
            .post(format!("{}/api/v1/accounts", controller.http_url))
            .header("cookie", &session.cookie)
            .header("x-csrf-token", &session.csrf)
            .json(&json!({"name": "olivia", "role": "operator", "password": password, "must_change_password": false}))
            .send()
            .await
            .unwrap()
    };
    let created = create("short").await;
    assert_eq!(created.status(), 400, "a password under 12 characters");
    let created = create("a long enough one").await;
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let accounts = anonymous()
        .get(format!("{}/api/v1/accounts", controller.http_url))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(accounts.contains("olivia"), "{accounts}");
    assert!(!accounts.contains("argon2"), "{accounts}");
    let session: Value = anonymous()
        .post(format!("{}/api/v1/session", controller.http_url))
        .json(&json!({"name": "olivia", "password": "a long enough one"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["role"], "operator", "{session}");
}

#[tokio::test]
async fn every_change_and_every_refusal_is_in_the_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let password = controller.admin_password.clone().unwrap();
    let url = |path: &str| format!("{}{path}", controller.http_url);
    let olga = controller.token_for("olga", "operator").await;
    let vic = controller.token_for("vic", "viewer").await;
    let client = anonymous();

    let planned = client
        .post(url("/api/v1/rollouts"))
        .bearer_auth(&olga)
        .json(&json!({"release": "no-such-release"}))
        .send()
        .await
        .unwrap();
    assert_eq!(planned.status(), 404);
    let forbidden = client
        .post(url("/api/v1/tokens"))
        .bearer_auth(&vic)
        .json(&json!({"name": "x", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    let anonymous_read = client.get(url("/api/v1/servers")).send().await.unwrap();
    assert_eq!(anonymous_read.status(), 401);
    let wrong = client
        .post(url("/api/v1/session"))
        .json(&json!({"name": "mallory", "password": "guess"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    sign_in(&controller, &password).await;

    let (status, olgas) = controller.get("/api/v1/audit?actor=olga").await;
    assert_eq!(status, 200);
    let olgas = olgas.as_array().unwrap();
    assert_eq!(olgas.len(), 1, "{olgas:?}");
    assert_eq!(olgas[0]["action"], "POST /api/v1/rollouts");
    assert_eq!(olgas[0]["target"], "/api/v1/rollouts");
    assert_eq!(olgas[0]["outcome"], 404);
    assert!(
        olgas[0]["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{}",
        olgas[0]
    );

    let (_, sessions) = controller.get("/api/v1/audit?action=session").await;
    let sign_ins: Vec<(String, i64)> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["outcome"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sign_ins,
        [("admin".to_owned(), 200), ("mallory".to_owned(), 401)],
        "newest first"
    );
    let (_, refusals) = controller.get("/api/v1/audit?actor=anonymous").await;
    assert!(
        refusals
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "GET /api/v1/servers" && e["outcome"] == 401),
        "{refusals}"
    );
    let (_, vics) = controller.get("/api/v1/audit?actor=vic").await;
    assert_eq!(vics[0]["outcome"], 403, "{vics}");

    // The export: every entry, oldest first, one JSON object a line.
    let export = flotilla_tests::http()
        .get(url("/api/v1/audit/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = export
        .text()
        .await
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(lines.iter().any(|l| l["actor"] == "mallory"));
    // Token creations by the harness are changes too.
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "POST /api/v1/tokens" && l["outcome"] == 201)
    );

    // Only admins read it, and nothing in the API can change it.
    let as_viewer = client
        .get(url("/api/v1/audit"))
        .bearer_auth(&vic)
        .send()
        .await
        .unwrap();
    assert_eq!(as_viewer.status(), 403);
    let (_, document) = controller.get("/api/v1/openapi.json").await;
    for (path, item) in document["paths"].as_object().unwrap() {
        if path.starts_with("/api/v1/audit") {
            let methods: Vec<&String> = item.as_object().unwrap().keys().collect();
            assert_eq!(methods, ["get"], "{path}");
        }
    }

    // The dashboard's audit page shows it, filtered.
    let browser = flotilla_tests::browser::Browser::start().await;
    browser.sign_in(&controller).await;
    browser.goto(&url("/audit")).await;
    browser
        .eval("document.getElementById('actor').value = 'olga'; document.getElementById('filter').requestSubmit(); return true;")
        .await;
    let rows = flotilla_tests::wait_until("olga's entry alone on the audit page", async || {
        let rows = browser
            .eval(
                "return [...document.querySelectorAll('#trail tbody tr')].map(r => r.textContent)",
            )
            .await;
        let texts: Vec<String> = rows
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if texts.len() == 1 && texts[0].contains("olga") {
            Ok(texts)
        } else {
            Err(format!("{texts:?}"))
        }
    })
    .await;
    assert!(
        rows[0].contains("POST /api/v1/rollouts") && rows[0].contains("404"),
        "{rows:?}"
    );
    browser.quit().await;
}

#[tokio::test]
async fn the_dashboard_answers_only_its_own_names_and_is_never_framed() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let port = controller
        .http_addr()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let client = flotilla_tests::http();
    let page = client
        .get(format!("{}/", controller.http_url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    for (host, expected) in [
        (format!("rebind.evil.example:{port}"), 403),
        (format!("localhost:{port}"), 200),
    ] {
        let answer = client
            .get(format!("{}/api/v1/sites", controller.http_url))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), expected, "{host}");
    }
}

#[tokio::test]
async fn the_controllers_owner_makes_a_publishers_token_in_one_command() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    // The database the controller runs on, as its owner names it.
    let db = flotilla_tests::postgres::controller_database(dir.path())
        .unwrap_or_else(|| controller.db.display().to_string());
    let create = async |name: &str, role: &str| {
        tokio::process::Command::new(flotilla_tests::binary("flotilla-controller"))
            .args([
                "--db", &db, "token", "create", "--role", role, "--name", name,
            ])
            .output()
            .await
            .unwrap()
    };
    let made = create("ci", "publisher").await;
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let token = String::from_utf8_lossy(&made.stdout).trim().to_owned();
    assert!(token.len() >= 32, "the token alone on stdout: {token}");
    // It is a publisher's token, named for the audit trail.
    let who: Value = anonymous()
        .get(format!("{}/api/v1/session", controller.http_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (who["name"].as_str(), who["role"].as_str()),
        (Some("ci"), Some("publisher")),
        "{who}"
    );
    // A name taken, or a role that does not exist, is refused and says so.
    let again = create("ci", "publisher").await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("a token named ci exists"));
    let wrong = create("other", "root").await;
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr)
            .contains("--role root: one of viewer, operator, publisher, admin")
    );
}
