//! Accounts' lifecycle: an admin changes an account's role, disables and
//! enables it, resets its password, deletes it; what it held (sessions, the
//! API tokens it made) is refused at once; the last enabled admin stays;
//! every change is in the audit trail.

#![allow(clippy::unwrap_used)]

use flotilla_tests::{Controller, Session, anonymous};
use serde_json::{Value, json};

/// The controller's API as `session`: a method, a path, a body; the status
/// and the JSON answer.
async fn call(
    controller: &Controller,
    session: &Session,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = anonymous()
        .request(method, format!("{}{path}", controller.http_url))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn sign_in(controller: &Controller, name: &str, password: &str) -> Session {
    Session::sign_in(&anonymous(), &controller.http_url, name, password).await
}

#[tokio::test]
async fn an_account_is_re_roled_disabled_reset_and_deleted_and_what_it_held_is_refused_at_once() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let admin = sign_in(
        &controller,
        "admin",
        &controller.admin_password.clone().unwrap(),
    )
    .await;
    for (name, role) in [("adam", "admin"), ("olivia", "operator")] {
        let (status, body) = call(
            &controller,
            &admin,
            Method::POST,
            "/api/v1/accounts",
            Some(json!({"name": name, "role": role, "password": format!("{name}'s password 1"), "must_change_password": false})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let adam = sign_in(&controller, "adam", "adam's password 1").await;
    let (status, token) = call(
        &controller,
        &adam,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "adams-pipeline", "role": "publisher"})),
    )
    .await;
    assert_eq!(status, 201, "{token}");
    let token = token["secret"].as_str().unwrap().to_owned();
    let with_token = async || {
        anonymous()
            .get(format!("{}/api/v1/servers", controller.http_url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(with_token().await, 200);

    // Disabled: its session and the token it made are refused at once.
    let (status, body) = call(
        &controller,
        &admin,
        Method::PATCH,
        "/api/v1/accounts/adam",
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["disabled_at"].is_string(), "{body}");
    let (status, _) = call(&controller, &adam, Method::GET, "/api/v1/servers", None).await;
    assert_eq!(status, 401, "the disabled account's session");
    assert_eq!(with_token().await, 401, "the disabled account's token");
    let refused = anonymous()
        .post(format!("{}/api/v1/session", controller.http_url))
        .json(&json!({"name": "adam", "password": "adam's password 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "account_disabled", "{body}");
    // Enabled again: the token works; the account signs in again.
    let (status, _) = call(
        &controller,
        &admin,
        Method::PATCH,
        "/api/v1/accounts/adam",
        Some(json!({"disabled": false})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(with_token().await, 200);
    sign_in(&controller, "adam", "adam's password 1").await;

    // A new role applies to the next request.
    let olivia = sign_in(&controller, "olivia", "olivia's password 1").await;
    let (status, _) = call(
        &controller,
        &olivia,
        Method::POST,
        "/api/v1/rollouts",
        Some(json!({"release": "none"})),
    )
    .await;
    assert_eq!(status, 404, "an operator may plan a rollout");
    let (status, _) = call(
        &controller,
        &admin,
        Method::PATCH,
        "/api/v1/accounts/olivia",
        Some(json!({"role": "viewer"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &controller,
        &olivia,
        Method::POST,
        "/api/v1/rollouts",
        Some(json!({"release": "none"})),
    )
    .await;
    assert_eq!(status, 403, "a viewer may not");

    // An admin's reset: her sessions end, and the new password must be
    // changed at her next sign-in.
    let (status, _) = call(
        &controller,
        &admin,
        Method::PUT,
        "/api/v1/accounts/olivia/password",
        Some(json!({"password": "a reset password"})),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(&controller, &olivia, Method::GET, "/api/v1/servers", None).await;
    assert_eq!(status, 401, "her session ended");
    let olivia = sign_in(&controller, "olivia", "a reset password").await;
    let (status, body) = call(&controller, &olivia, Method::GET, "/api/v1/servers", None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "password_change_required");
    let (status, _) = call(
        &controller,
        &olivia,
        Method::PUT,
        "/api/v1/session/password",
        Some(json!({"current_password": "a reset password", "new_password": "olivia's own password"})),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(&controller, &olivia, Method::GET, "/api/v1/servers", None).await;
    assert_eq!(status, 200);

    // Deleted: the token it made is revoked; its name signs in no more.
    let (status, _) = call(
        &controller,
        &admin,
        Method::DELETE,
        "/api/v1/accounts/adam",
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(with_token().await, 401);
    let gone = anonymous()
        .post(format!("{}/api/v1/session", controller.http_url))
        .json(&json!({"name": "adam", "password": "adam's password 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 401);
    let (status, _) = call(
        &controller,
        &admin,
        Method::DELETE,
        "/api/v1/accounts/adam",
        None,
    )
    .await;
    assert_eq!(status, 404);

    // The last enabled admin stays one.
    for (method, path, body) in [
        (
            Method::PATCH,
            "/api/v1/accounts/admin",
            Some(json!({"disabled": true})),
        ),
        (
            Method::PATCH,
            "/api/v1/accounts/admin",
            Some(json!({"role": "operator"})),
        ),
        (Method::DELETE, "/api/v1/accounts/admin", None),
    ] {
        let (status, body) = call(&controller, &admin, method.clone(), path, body).await;
        assert_eq!(status, 409, "{method} {path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("last enabled admin"),
            "{body}"
        );
    }

    // Every change is in the audit trail, with who made it.
    let (_, trail) = controller.get("/api/v1/audit?action=accounts").await;
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
        ("admin", "PATCH /api/v1/accounts/{name}", 200),
        ("admin", "PUT /api/v1/accounts/{name}/password", 204),
        ("admin", "DELETE /api/v1/accounts/{name}", 204),
    ] {
        assert!(
            actions.iter().any(|(actor, action, outcome)| (
                actor.as_str(),
                action.as_str(),
                *outcome
            ) == expected),
            "{expected:?} in {actions:?}"
        );
    }
    let (_, own) = controller
        .get("/api/v1/audit?actor=olivia&action=password")
        .await;
    assert_eq!(own[0]["outcome"], 204, "{own}");
}
