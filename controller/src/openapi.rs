//! The OpenAPI document's frame: its title, tags and security schemes, and
//! the answers every operation may give besides its own. The operations
//! themselves are declared on their handlers.

use utoipa::OpenApi;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Flotilla controller API",
        description = "The fleet of customer sites, their servers and the modules each server hosts."
    ),
    tags(
        (name = "fleet", description = "Sites, servers and modules"),
        (name = "installs", description = "Installing modules on servers, and what happened"),
        (name = "releases", description = "Publishing signed module packages, grouped in releases"),
        (name = "databases", description = "Database modules: drift reports and guided, script-by-script upgrades"),
        (name = "rollouts", description = "Bringing a release to sites: plan, start, pause, resume, cancel, retry; maintenance windows"),
        (name = "operators", description = "Signing in, accounts and API tokens. Every operation says the role it needs: viewer (reads), operator (installs, rollouts, schedules, database scripts), publisher (packages and releases), admin (everything)")
    ),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

/// The two ways to prove who you are: an API token, or a signed-in
/// browser's session cookie (whose changes carry `X-CSRF-Token`).
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token: Authorization: Bearer <token>"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "agent",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A connected agent's download token, from its connection's Welcome",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::SESSION_COOKIE,
                "A signed-in browser's session; changes also carry X-CSRF-Token",
            ))),
        );
    }
}

/// Documents what every operation may answer besides its own responses:
/// 400 for a request it cannot use (a malformed path, query or body), 401
/// and 403 when it needs a role, 415 when it takes a JSON body sent as
/// something else; each with the [`crate::api::ErrorBody`].
pub fn with_common_responses(mut document: serde_json::Value) -> serde_json::Value {
    let error = serde_json::json!({
        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
    });
    let Some(paths) = document["paths"].as_object_mut() else {
        return document;
    };
    for (path, item) in paths.iter_mut() {
        // The package upload streams to disk: no limit on its size.
        let streamed = path == "/api/v1/packages/{sha256}";
        for method in ["get", "put", "post", "delete", "patch"] {
            let Some(operation) = item.get_mut(method).and_then(|o| o.as_object_mut()) else {
                continue;
            };
            let secured = operation
                .get("security")
                .and_then(|s| s.as_array())
                .is_some_and(|s| {
                    s.iter()
                        .any(|r| r.as_object().is_some_and(|r| !r.is_empty()))
                });
            let has_body = operation.contains_key("requestBody");
            let mut common = vec![("400", "The request cannot be used; the message says why")];
            if secured {
                common.push(("401", "No valid credentials"));
                common.push((
                    "403",
                    "The caller's role does not allow it, or a browser change lacks its CSRF token",
                ));
            }
            if has_body {
                if !streamed {
                    common.push(("413", "The body is over 2 MiB"));
                }
                common.push(("415", "The body is not sent as application/json"));
            }
            let responses = operation
                .entry("responses")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(responses) = responses.as_object_mut() {
                for (status, description) in common {
                    responses.entry(status).or_insert_with(|| {
                        serde_json::json!({"description": description, "content": error.clone()})
                    });
                }
            }
        }
    }
    document
}
