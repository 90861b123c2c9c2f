//! The id_token checks against tokens signed here with a test key (an RSA
//! key made for these tests, `test-rs256-key.pem`, trusted by nothing).

#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use super::{Expected, Refused, role_of, verify_id_token};
use crate::auth::Role;

/// The test key's modulus, base64url (its exponent is 65537, `AQAB`).
const MODULUS: &str = "6ALAcOxoPiB88UdfXiEh5cgxMed84NRttYL1zsjZ2n2cWFB2lvo-vgJb9py7PYVND0gXhlBff6b02R63027x8hx-LL9cZyiztEVgIOff1YisMyHkyFbD4HCQJrV2TsNffInGbZaLv02_6oLxQGgm57w-OnfRtiM5u2mVLOfvgDlOVpnQtgyEXf605LlEjWVq2p-Ut0rdKGM9gMADCf8NN-KgVreIYf2u_kX4aja_fg6RoqopoZAj2hxyipdj_5tDAgDIIYDSOwD_U4JtxMqOKQwUfVnxC_CUFehLKEw0gBhGpK02HbcU6PpL25Iav_h2mzuy0Iw0zBM0wAyBynk7nQ";
const NOW: i64 = 1_800_000_000;

fn key() -> RsaKeyPair {
    let der = PrivatePkcs8KeyDer::from_pem_slice(include_bytes!("test-rs256-key.pem")).unwrap();
    RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap()
}

fn jwks() -> Value {
    json!({"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": MODULUS, "e": "AQAB"}]})
}

/// `claims` signed with the test key, under `header`.
fn signed(header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let key = key();
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", B64.encode(signature))
}

fn good_claims() -> Value {
    json!({"iss": "https://idp.example", "aud": "flotilla", "sub": "alice", "nonce": "n-1",
           "iat": NOW - 5, "exp": NOW + 300, "groups": ["flotilla-admins", "staff"]})
}

fn expected() -> Expected<'static> {
    Expected {
        issuer: "https://idp.example",
        client_id: "flotilla",
        nonce: "n-1",
        now: NOW,
        leeway: 60,
    }
}

fn check(claims: &Value) -> Result<serde_json::Map<String, Value>, Refused> {
    let token = signed(&json!({"alg": "RS256", "kid": "k1"}), claims);
    verify_id_token(&token, &jwks(), &expected())
}

fn with(change: &str, value: Value) -> Value {
    let mut claims = good_claims();
    claims[change] = value;
    claims
}

#[test]
fn a_token_the_provider_signed_for_this_sign_in_is_taken() {
    let claims = check(&good_claims()).unwrap();
    assert_eq!(claims["sub"], "alice");
}

#[test]
fn a_tampered_token_is_refused() {
    let token = signed(&json!({"alg": "RS256", "kid": "k1"}), &good_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = B64.encode(with("groups", json!(["flotilla-admins"])).to_string());
    let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
    assert_eq!(
        verify_id_token(&tampered, &jwks(), &expected()),
        Err(Refused::Signature)
    );
}

#[test]
fn an_expired_token_and_one_for_another_client_are_refused() {
    let expired = check(&with("exp", json!(NOW - 120)));
    assert!(
        matches!(&expired, Err(Refused::Claim { claim: "exp", .. })),
        "{expired:?}"
    );
    let within_leeway = check(&with("exp", json!(NOW - 30)));
    assert!(within_leeway.is_ok(), "{within_leeway:?}");
    for aud in [
        json!("some-other-app"),
        json!(["some-other-app"]),
        json!(["flotilla", "other"]),
    ] {
        let refused = check(&with("aud", aud.clone()));
        assert!(
            matches!(&refused, Err(Refused::Claim { claim: "aud", .. })),
            "{aud}: {refused:?}"
        );
    }
    let azp_ok = check(
        &json!({"iss": "https://idp.example", "aud": ["flotilla", "other"], "azp": "flotilla",
        "sub": "alice", "nonce": "n-1", "iat": NOW, "exp": NOW + 60}),
    );
    assert!(azp_ok.is_ok(), "{azp_ok:?}");
}

#[test]
fn every_other_claim_is_checked() {
    for (name, value) in [
        ("iss", json!("https://evil.example")),
        ("nonce", json!("a-replayed-one")),
        ("sub", json!("")),
        ("exp", json!("1900000000")),
        ("iat", json!(NOW + 3600)),
        ("nbf", json!(NOW + 3600)),
        ("groups", json!("flotilla-admins")),
        ("azp", json!("some-other-app")),
    ] {
        let refused = check(&with(name, value.clone()));
        assert!(
            matches!(&refused, Err(Refused::Claim { claim, .. }) if *claim == name),
            "{name} = {value}: {refused:?}"
        );
    }
}

#[test]
fn only_rs256_by_a_known_key_is_taken() {
    let claims = good_claims();
    let none = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none"}).to_string()),
        B64.encode(claims.to_string())
    );
    assert_eq!(
        verify_id_token(&none, &jwks(), &expected()),
        Err(Refused::Algorithm("none".to_owned()))
    );
    let hs = signed(&json!({"alg": "HS256", "kid": "k1"}), &claims);
    assert_eq!(
        verify_id_token(&hs, &jwks(), &expected()),
        Err(Refused::Algorithm("HS256".to_owned()))
    );
    let unknown = signed(&json!({"alg": "RS256", "kid": "k2"}), &claims);
    assert_eq!(
        verify_id_token(&unknown, &jwks(), &expected()),
        Err(Refused::NoKey("k2".to_owned()))
    );
    assert_eq!(
        verify_id_token("a.b", &jwks(), &expected()),
        Err(Refused::Malformed)
    );
}

#[test]
fn the_groups_give_the_highest_role_mapped() {
    let mapping = vec![
        ("flotilla-viewers".to_owned(), Role::Viewer),
        ("flotilla-admins".to_owned(), Role::Admin),
        ("release-team".to_owned(), Role::Publisher),
    ];
    let claims = check(&good_claims()).unwrap();
    assert_eq!(role_of(&claims, &mapping), Some(Role::Admin));
    let viewer = check(&with("groups", json!(["flotilla-viewers", "staff"]))).unwrap();
    assert_eq!(role_of(&viewer, &mapping), Some(Role::Viewer));
    let none = check(&with("groups", json!(["staff"]))).unwrap();
    assert_eq!(
        role_of(&none, &mapping),
        None,
        "no group of the mapping: no role"
    );
}
