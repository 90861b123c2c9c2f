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

    // A new role: the tokens an account made with its old one are revoked.
    let (status, _) = call(
        &controller,
        &admin,
        Method::POST,
        "/api/v1/accounts",
        Some(json!({"name": "ada", "role": "admin", "password": "ada's password 12", "must_change_password": false})),
    )
    .await;
    assert_eq!(status, 201);
    let ada = sign_in(&controller, "ada", "ada's password 12").await;
    let (_, adas) = call(
        &controller,
        &ada,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "adas-token", "role": "admin"})),
    )
    .await;
    let adas = adas["secret"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &controller,
        &admin,
        Method::PATCH,
        "/api/v1/accounts/ada",
        Some(json!({"role": "viewer"})),
    )
    .await;
    assert_eq!(status, 200);
    let demoted = anonymous()
        .get(format!("{}/api/v1/accounts", controller.http_url))
        .bearer_auth(&adas)
        .send()
        .await
        .unwrap();
    assert_eq!(
        demoted.status(),
        401,
        "an admin's token kept after a demotion"
    );

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

    // A body that is not an object of changes changes nothing.
    for body in [json!([null, null]), json!(["admin", true]), json!({})] {
        let (status, answer) = call(
            &controller,
            &admin,
            Method::PATCH,
            "/api/v1/accounts/olivia",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    assert_eq!(account_role(&controller, "olivia").await, "viewer");

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

/// The role of the account `name`, as the API reads it.
async fn account_role(controller: &Controller, name: &str) -> String {
    let (_, accounts) = controller.get("/api/v1/accounts").await;
    accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .map(|a| a["role"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Evaluates `script` in the page until it returns `true`.
async fn until_true(browser: &flotilla_tests::browser::Browser, what: &str, script: &str) {
    flotilla_tests::wait_until(what, async || match browser.eval(script).await {
        Value::Bool(true) => Ok(()),
        other => Err(other.to_string()),
    })
    .await;
}

/// Presses the two-click button `selector` twice: the first press makes
/// it ask, the second does it (both on the same button, so that a table
/// reloaded meanwhile cannot take the second).
async fn press_twice(browser: &flotilla_tests::browser::Browser, selector: &str) {
    until_true(
        browser,
        "the button asking, then done",
        &format!(
            "const b = document.querySelector('{selector}'); if (!b) return false; \
             b.click(); const asked = b.dataset.confirm === 'yes' && b.textContent !== ''; \
             b.click(); return asked && b.disabled;"
        ),
    )
    .await;
}

/// The account `name` as the API reads it.
async fn account(controller: &Controller, name: &str) -> Option<Value> {
    let (_, accounts) = controller.get("/api/v1/accounts").await;
    accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .cloned()
}

#[tokio::test]
async fn the_users_page_makes_changes_disables_resets_and_deletes_accounts_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let browser = flotilla_tests::browser::Browser::start().await;
    browser.sign_in(&controller).await;
    browser
        .goto(&format!("{}/users", controller.http_url))
        .await;
    until_true(
        &browser,
        "the accounts",
        "return !!document.querySelector('[data-account=\"admin\"]')",
    )
    .await;

    // A new account, from the form.
    browser
        .eval(
            "document.getElementById('account-name').value = 'olivia'; \
             document.getElementById('account-role').value = 'operator'; \
             document.getElementById('account-password').value = 'olivia first password'; \
             document.getElementById('new-account').requestSubmit(); return true;",
        )
        .await;
    until_true(
        &browser,
        "olivia's row",
        "return !!document.querySelector('[data-account=\"olivia\"]')",
    )
    .await;
    let olivia = account(&controller, "olivia").await.unwrap();
    assert_eq!(olivia["role"], "operator");
    assert_eq!(olivia["must_change_password"], true, "checked by default");

    // Her role, from its menu.
    browser
        .eval(
            "const s = document.querySelector('[data-role=\"olivia\"]'); s.value = 'viewer'; \
             s.dispatchEvent(new Event('change')); return true;",
        )
        .await;
    flotilla_tests::wait_until("olivia a viewer", async || {
        let olivia = account(&controller, "olivia").await.unwrap();
        (olivia["role"] == "viewer")
            .then_some(())
            .ok_or(olivia.to_string())
    })
    .await;

    // Disabled, then enabled, with its button.
    for disabled in [true, false] {
        browser
            .eval("document.querySelector('[data-toggle=\"olivia\"]').click(); return true;")
            .await;
        flotilla_tests::wait_until("olivia's state", async || {
            let olivia = account(&controller, "olivia").await.unwrap();
            (olivia["disabled_at"].is_string() == disabled)
                .then_some(())
                .ok_or(olivia.to_string())
        })
        .await;
        until_true(
            &browser,
            "the button says what it does next",
            &format!(
                "return document.querySelector('[data-toggle=\"olivia\"]').textContent === '{}'",
                if disabled { "Enable" } else { "Disable" }
            ),
        )
        .await;
    }

    // Her password, reset: the new one signs in, and must be changed.
    browser
        .eval(
            "document.querySelector('[data-password=\"olivia\"]').value = 'a password reset by admin'; \
             document.querySelector('[data-reset=\"olivia\"]').click(); return true;",
        )
        .await;
    flotilla_tests::wait_until("the reset password", async || {
        let signed = anonymous()
            .post(format!("{}/api/v1/session", controller.http_url))
            .json(&json!({"name": "olivia", "password": "a password reset by admin"}))
            .send()
            .await
            .unwrap();
        match signed.status().as_u16() {
            200 => Ok(()),
            status => Err(status.to_string()),
        }
    })
    .await;

    // An API token, shown once; then revoked with two clicks.
    browser
        .eval(
            "document.getElementById('token-name').value = 'pipeline'; \
             document.getElementById('new-token').requestSubmit(); return true;",
        )
        .await;
    until_true(
        &browser,
        "the token's secret",
        "return document.getElementById('token-secret').textContent.length === 64",
    )
    .await;
    let secret = browser
        .eval("return document.getElementById('token-secret').textContent")
        .await;
    let with_token = async || {
        anonymous()
            .get(format!("{}/api/v1/servers", controller.http_url))
            .bearer_auth(secret.as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(with_token().await, 200);
    until_true(
        &browser,
        "the token's row",
        "return !!document.querySelector('[data-revoke=\"pipeline\"]')",
    )
    .await;
    press_twice(&browser, "[data-revoke=\"pipeline\"]").await;
    flotilla_tests::wait_until("the token revoked", async || match with_token().await {
        401 => Ok(()),
        status => Err(status.to_string()),
    })
    .await;

    // Deleted, with two clicks.
    press_twice(&browser, "[data-delete=\"olivia\"]").await;
    flotilla_tests::wait_until("olivia deleted", async || {
        match account(&controller, "olivia").await {
            None => Ok(()),
            Some(olivia) => Err(olivia.to_string()),
        }
    })
    .await;
    until_true(
        &browser,
        "her row gone",
        "return !document.querySelector('[data-account=\"olivia\"]')",
    )
    .await;

    // The admin's own password, from its form.
    let current = controller.admin_password.clone().unwrap();
    browser
        .eval(&format!(
            "document.getElementById('current-password').value = {current:?}; \
             document.getElementById('new-password').value = 'the admin chose this one'; \
             document.getElementById('my-password').requestSubmit(); return true;"
        ))
        .await;
    until_true(
        &browser,
        "the change confirmed",
        "return !document.getElementById('password-changed').hidden",
    )
    .await;
    sign_in(&controller, "admin", "the admin chose this one").await;
    browser.quit().await;
}

#[tokio::test]
async fn a_password_someone_else_set_is_changed_at_sign_in_before_any_page() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let created = flotilla_tests::http()
        .post(format!("{}/api/v1/accounts", controller.http_url))
        .json(&json!({"name": "olivia", "role": "operator", "password": "set by the admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let browser = flotilla_tests::browser::Browser::start().await;
    browser
        .goto(&format!("{}/login?next=%2Frollouts", controller.http_url))
        .await;
    browser
        .eval(
            "document.getElementById('name').value = 'olivia'; \
             document.getElementById('password').value = 'set by the admin'; \
             document.getElementById('sign-in').requestSubmit(); return true;",
        )
        .await;
    // The sign-in page itself asks for a new password, before any page.
    until_true(
        &browser,
        "the change form on the sign-in page",
        "return location.search === '?next=%2Frollouts' && !document.getElementById('change').hidden \
         && document.getElementById('change-current').value === 'set by the admin'",
    )
    .await;
    // Another page first: it sends her back here.
    browser
        .goto(&format!("{}/releases", controller.http_url))
        .await;
    until_true(
        &browser,
        "sent back to change it",
        "return location.pathname === '/login' && !document.getElementById('change').hidden",
    )
    .await;
    browser
        .eval(
            "document.getElementById('change-current').value = 'set by the admin'; \
             document.getElementById('change-new').value = 'olivia chose this'; \
             document.getElementById('change-again').value = 'olivia typed this'; \
             document.getElementById('change').requestSubmit(); return true;",
        )
        .await;
    until_true(
        &browser,
        "the two new passwords differ",
        "return document.getElementById('change-problem').textContent.includes('differ')",
    )
    .await;
    browser
        .eval(
            "document.getElementById('change-again').value = 'olivia chose this'; \
             document.getElementById('change').requestSubmit(); return true;",
        )
        .await;
    flotilla_tests::wait_until("the page she asked for", async || {
        let at = browser
            .eval("return location.pathname + ' ' + document.getElementById('change-problem')?.textContent")
            .await;
        match at.as_str() {
            Some(at) if at.starts_with("/releases") => Ok(()),
            _ => Err(at.to_string()),
        }
    })
    .await;
    let olivia = account(&controller, "olivia").await.unwrap();
    assert_eq!(olivia["must_change_password"], false, "{olivia}");
    sign_in(&controller, "olivia", "olivia chose this").await;
    browser.quit().await;
}
