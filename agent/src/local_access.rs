//! Who may change something through the portal. Reading stays open on
//! loopback, as the procedure expects; a change (an install, a restore, a
//! database script) must prove that the caller administers this server:
//!
//! - scripts and the command line send the local token,
//!   `Authorization: Bearer …`, from `<data>/identity/portal.token`: a new
//!   one at each start, in a file only the agent's account (root,
//!   LocalSystem, Administrators) reads;
//! - a person in a browser opens a one-time link that `flotilla-agent
//!   portal-link`, run as an administrator, prints: it signs the browser in
//!   for 12 hours (an `HttpOnly`, `SameSite=Strict` cookie).
//!
//! A browser never sends the `Authorization` header on its own, so the
//! token cannot be used from another site's page.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

/// The portal's session cookie.
pub const COOKIE: &str = "flotilla_portal";
/// How long a one-time link works.
const LINK_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// How long a browser stays signed in.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Links and sessions kept at most (the oldest go first).
const KEPT: usize = 1000;

/// The local token and the browsers' links and sessions, in memory: a
/// restart signs everyone out and makes a new token.
#[derive(Debug)]
pub struct Local {
    token: String,
    /// One-time links' codes (their sha256) and when each stops working.
    links: Mutex<HashMap<String, Instant>>,
    /// Sessions (their cookie's sha256) and when each ends.
    sessions: Mutex<HashMap<String, Instant>>,
}

impl Default for Local {
    fn default() -> Self {
        Local {
            token: flotilla_proto::web::random_secret(),
            links: Mutex::default(),
            sessions: Mutex::default(),
        }
    }
}

fn digest(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Keeps `map` within [`KEPT`]: the expired go, then the soonest to expire.
fn keep_bounded(map: &mut HashMap<String, Instant>, now: Instant) {
    map.retain(|_, until| *until > now);
    while map.len() >= KEPT {
        let soonest = map
            .iter()
            .min_by_key(|(_, until)| **until)
            .map(|(k, _)| k.clone());
        match soonest {
            Some(key) => map.remove(&key),
            None => break,
        };
    }
}

impl Local {
    /// The local token, for the file only administrators read.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Writes the local token to `<data>/identity/portal.token`, readable
    /// by the agent's account only.
    pub fn write(&self, layout: &crate::config::DataLayout) -> anyhow::Result<()> {
        let file = layout.portal_token_file();
        flotilla_proto::tls::write_pem_file(&file, &format!("{}\n", self.token), true)
            .map_err(|e| anyhow::anyhow!("cannot write the portal's token {}: {e}", file.display()))
    }

    /// Whether the request carries the local token.
    pub fn bearer(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|sent| flotilla_proto::web::same_secret(sent.trim(), &self.token))
    }

    /// Whether the request comes from a signed-in browser.
    pub fn signed_in(&self, headers: &HeaderMap) -> bool {
        let Some(cookie) = cookie(headers) else {
            return false;
        };
        let now = Instant::now();
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&digest(&cookie))
            .is_some_and(|until| *until > now)
    }

    /// A new one-time link's code.
    pub fn new_link(&self) -> String {
        let code = flotilla_proto::web::random_secret();
        let now = Instant::now();
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        keep_bounded(&mut links, now);
        links.insert(digest(&code), now + LINK_LIFETIME);
        code
    }

    /// Takes the link `code` (once, before it expires): a new session's
    /// cookie value.
    pub fn follow_link(&self, code: &str) -> Option<String> {
        let now = Instant::now();
        let until = self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&digest(code))?;
        if until <= now {
            return None;
        }
        let session = flotilla_proto::web::random_secret();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        keep_bounded(&mut sessions, now);
        sessions.insert(digest(&session), now + SESSION_LIFETIME);
        Some(session)
    }

    /// Ends the browser's session, if any.
    pub fn sign_out(&self, headers: &HeaderMap) {
        if let Some(cookie) = cookie(headers) {
            self.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&digest(&cookie));
        }
    }
}

/// The portal's session cookie in a request.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The `Set-Cookie` of a new session.
pub fn set_cookie(session: &str) -> String {
    format!(
        "{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    )
}

/// What a person or a script must do to make changes.
pub fn how_to_sign_in(token_file: &std::path::Path) -> String {
    format!(
        "Changes need an administrator of this server: run `flotilla-agent portal-link` as an administrator (root) and open the link it prints; scripts send the token in {} as Authorization: Bearer.",
        token_file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = header::HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
        headers
    }

    #[test]
    fn a_link_works_once_and_signs_a_browser_in() {
        let local = Local::default();
        let code = local.new_link();
        let session = local.follow_link(&code);
        assert!(session.is_some());
        assert!(local.follow_link(&code).is_none(), "a second time");
        let cookie = with(
            header::COOKIE,
            &format!("other=1; {COOKIE}={}", session.unwrap_or_default()),
        );
        assert!(local.signed_in(&cookie));
        assert!(!local.signed_in(&with(header::COOKIE, &format!("{COOKIE}=forged"))));
        local.sign_out(&cookie);
        assert!(!local.signed_in(&cookie));
    }

    #[test]
    fn the_token_is_taken_only_as_a_bearer() {
        let local = Local::default();
        let token = local.token().to_owned();
        assert!(local.bearer(&with(header::AUTHORIZATION, &format!("Bearer {token}"))));
        assert!(!local.bearer(&with(header::AUTHORIZATION, "Bearer nope")));
        assert!(!local.signed_in(&with(header::COOKIE, &format!("{COOKIE}={token}"))));
    }

    #[test]
    fn links_kept_are_bounded() {
        let local = Local::default();
        for _ in 0..(KEPT + 50) {
            local.new_link();
        }
        assert!(local.links.lock().map(|l| l.len()).unwrap_or(0) <= KEPT);
    }
}

/// The secrets' access lists on Windows, built and read back (run under
/// Wine in CI: `.ci/wine`). Wine 8 answers the setting of an access list
/// but keeps none: it reads back one it makes from the file's Unix mode
/// (SYSTEM, the owner, and Everyone reading a 0644 file). Where the list
/// set is not the one read back, the tests check what Wine lets them: the
/// calls succeed, and a list that lets others read is found.
#[cfg(all(test, windows))]
mod windows_acl_tests {
    use flotilla_proto::acl;

    /// Whether the system keeps the access lists set (real Windows does).
    fn kept(sddl: &str) -> bool {
        sddl.starts_with("D:P")
    }

    #[test]
    fn a_secret_gets_a_protected_list_of_system_administrators_and_its_owner() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("agent.pem");
        flotilla_proto::tls::write_pem_file(&key, "SECRET", true).expect("written");
        assert_eq!(
            std::fs::read_to_string(&key).ok().as_deref(),
            Some("SECRET")
        );
        let sddl = acl::sddl(&key).expect("its access list");
        if !kept(&sddl) {
            eprintln!("this system did not keep the access list set (Wine): it reads back {sddl}");
            return;
        }
        for trustee in ["SY", "BA", "OW"] {
            assert!(
                sddl.contains(&format!(";;;{trustee})")),
                "{trustee} in {sddl}"
            );
        }
        assert_eq!(acl::readable_by_others(&key).ok().flatten(), None, "{sddl}");
    }

    #[test]
    fn users_reading_a_secret_are_found_and_shut_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = dir.path().join("portal.token");
        std::fs::write(&token, "token").expect("write");
        acl::set_sddl(&token, "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;0x1200a9;;;BU)")
            .expect("Users may read");
        // Users (as set), or Everyone (as Wine reads a 0644 file back).
        let found = acl::readable_by_others(&token).expect("read back");
        assert!(
            found
                .as_deref()
                .is_some_and(|f| f.contains("BU") || f.contains("WD")),
            "{found:?}"
        );
        acl::restrict(&token).expect("restricted");
        acl::restrict(dir.path()).expect("the folder restricted");
        let sddl = acl::sddl(dir.path()).expect("the folder's list");
        if !kept(&sddl) {
            eprintln!("this system did not keep the access list set (Wine): it reads back {sddl}");
            return;
        }
        assert_eq!(acl::readable_by_others(&token).ok().flatten(), None);
        assert!(sddl.contains("OICI"), "inherited by what it holds: {sddl}");
    }
}
