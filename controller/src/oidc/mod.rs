//! Signing in with OpenID Connect (issue 25, in progress): what the
//! controller checks of an identity provider's id_token, and which role its
//! groups give. The flow itself (discovery, authorization code with PKCE,
//! the callback, sign-out) is not built yet; see `tests/oidc/PLAN.md`.
//!
//! The id_token is checked by hand with the crates the controller already
//! builds (ring's RSA, base64, serde_json, subtle): RS256 only, the key by
//! its `kid` from the provider's JWKS, then the issuer, the audience (and
//! `azp`), the times as integers, the nonce, the subject and the groups.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use serde_json::{Map, Value};

use crate::auth::Role;

/// What an id_token must say to be taken.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// The configured issuer, equal byte for byte to the discovery's.
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The nonce this sign-in sent.
    pub nonce: &'a str,
    /// Now, in Unix seconds.
    pub now: i64,
    /// The clock skew allowed, in seconds.
    pub leeway: i64,
}

/// Why an id_token was refused: what a person is told, and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the id_token is not a signed JWT (three base64url parts)")]
    Malformed,
    #[error("the id_token is signed with {0}, not RS256")]
    Algorithm(String),
    #[error("no key of the provider's JWKS signs this id_token (kid {0})")]
    NoKey(String),
    #[error(
        "the id_token's signature does not verify: it was changed, or not signed by the provider"
    )]
    Signature,
    #[error("the id_token's {claim} is wrong: {why}")]
    Claim { claim: &'static str, why: String },
}

fn claim(claim: &'static str, why: impl Into<String>) -> Refused {
    Refused::Claim {
        claim,
        why: why.into(),
    }
}

fn json_part(part: &str) -> Result<Map<String, Value>, Refused> {
    let bytes = B64.decode(part).map_err(|_| Refused::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| Refused::Malformed)
}

/// The id_token's claims, once its signature (by a key of `jwks`, the
/// provider's JWKS document) and every claim the controller relies on are
/// checked against `expected`.
pub fn verify_id_token(
    token: &str,
    jwks: &Value,
    expected: &Expected<'_>,
) -> Result<Map<String, Value>, Refused> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refused::Malformed);
    };
    let head = json_part(header)?;
    match head.get("alg").and_then(Value::as_str) {
        Some("RS256") => {}
        other => {
            return Err(Refused::Algorithm(
                other.unwrap_or("no algorithm").to_owned(),
            ));
        }
    }
    if head.contains_key("crit") {
        return Err(Refused::Malformed);
    }
    let kid = head.get("kid").and_then(Value::as_str);
    let no_key = || Refused::NoKey(kid.unwrap_or("none").to_owned());
    let key = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| {
            k["kty"] == "RSA"
                && kid.is_none_or(|kid| k["kid"] == kid)
                && k.get("use").is_none_or(|u| u == "sig")
                && k.get("alg").is_none_or(|a| a == "RS256")
        })
        .ok_or_else(no_key)?;
    let component = |name: &str| {
        key[name]
            .as_str()
            .and_then(|text| B64.decode(text).ok())
            .ok_or_else(no_key)
    };
    let (n, e) = (component("n")?, component("e")?);
    let signature = B64.decode(signature).map_err(|_| Refused::Malformed)?;
    RsaPublicKeyComponents { n: &n, e: &e }
        .verify(
            &RSA_PKCS1_2048_8192_SHA256,
            format!("{header}.{payload}").as_bytes(),
            &signature,
        )
        .map_err(|_| Refused::Signature)?;

    let claims = json_part(payload)?;
    let text = |name| claims.get(name).and_then(Value::as_str);
    // A time given as a string is refused, never read as "none".
    let time = |name: &'static str| {
        claims
            .get(name)
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| claim(name, "not a number of seconds"))
            })
            .transpose()
    };
    if text("iss") != Some(expected.issuer) {
        return Err(claim(
            "iss",
            format!("{:?}, not {:?}", text("iss").unwrap_or(""), expected.issuer),
        ));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expected.client_id,
        Some(Value::Array(auds)) => {
            auds.iter().any(|a| a == expected.client_id)
                && (auds.len() == 1 || text("azp") == Some(expected.client_id))
        }
        _ => false,
    };
    if !audience_ok {
        return Err(claim(
            "aud",
            format!(
                "it is not for this controller's client {:?}",
                expected.client_id
            ),
        ));
    }
    if claims.contains_key("azp") && text("azp") != Some(expected.client_id) {
        return Err(claim("azp", "another client was authorized"));
    }
    let exp = time("exp")?.ok_or_else(|| claim("exp", "missing"))?;
    if expected.now >= exp + expected.leeway {
        return Err(claim(
            "exp",
            format!("it expired {} s ago", expected.now - exp),
        ));
    }
    let iat = time("iat")?.ok_or_else(|| claim("iat", "missing"))?;
    if iat > expected.now + expected.leeway {
        return Err(claim("iat", "issued in the future"));
    }
    if let Some(nbf) = time("nbf")?
        && nbf > expected.now + expected.leeway
    {
        return Err(claim("nbf", "not valid yet"));
    }
    let nonce = text("nonce").unwrap_or("");
    if expected.nonce.is_empty() || !flotilla_proto::web::same_secret(nonce, expected.nonce) {
        return Err(claim("nonce", "it is not this sign-in's"));
    }
    if text("sub").is_none_or(str::is_empty) {
        return Err(claim("sub", "missing"));
    }
    if let Some(groups) = claims.get("groups")
        && !groups
            .as_array()
            .is_some_and(|list| list.iter().all(Value::is_string))
    {
        return Err(claim("groups", "not a list of names"));
    }
    Ok(claims)
}

/// The role an id_token's groups give, by `mapping` (group name, role):
/// the highest of the groups it names; `None` when it names none of them.
pub fn role_of(claims: &Map<String, Value>, mapping: &[(String, Role)]) -> Option<Role> {
    let groups: Vec<&str> = claims
        .get("groups")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let rank = |role: Role| match role {
        Role::Viewer => 0,
        Role::Publisher => 1,
        Role::Operator => 2,
        Role::Admin => 3,
    };
    mapping
        .iter()
        .filter(|(group, _)| groups.contains(&group.as_str()))
        .map(|(_, role)| *role)
        .max_by_key(|role| rank(*role))
}

#[cfg(test)]
mod tests;
