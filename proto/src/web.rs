//! What both web servers (the controller's dashboard and the agent's
//! portal) do alike: the headers every answer carries, the host name a
//! request was made for, which each checks against its own (DNS rebinding),
//! and the random secrets their tokens are made of.

/// Never framed, nothing but its own scripts, styles and forms, and no
/// referrer to any other site.
///
/// The referrer policy is `same-origin`, deliberately: a page's address
/// (a module, a rollout, a server's name) never reaches another site, while
/// the browser still names the page's own origin in `Origin` when one of its
/// forms or scripts posts a change. Under `no-referrer` a browser sends
/// `Origin: null` with a page's own form posts (the Fetch standard's rule
/// for non-GET requests), and the portal could no longer tell its own forms
/// from a sandboxed page's.
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
];

/// 32 random bytes from the operating system, as hex: tokens, session
/// cookies, CSRF tokens, generated passwords.
pub fn random_secret() -> String {
    random_bytes::<32>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a secret sent is the one expected, compared in constant time, so
/// that how long a refusal takes tells nothing of how much of it was right.
pub fn same_secret(sent: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    sent.len() == expected.len() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
}

/// `N` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // Without the system's generator nothing secure can be made.
    getrandom::fill(&mut bytes).unwrap_or_else(|e| panic!("no random numbers: {e}"));
    bytes
}

/// The name part of a `Host` header (`[::1]:8080` → `::1`,
/// `localhost:8080` → `localhost`), lowercase.
pub fn host_name(host: &str) -> String {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn the_name_of_a_host_header() {
        for (host, name) in [
            ("localhost:8080", "localhost"),
            ("LocalHost", "localhost"),
            ("127.0.0.1:7080", "127.0.0.1"),
            ("[::1]:8080", "::1"),
            ("[::1]", "::1"),
            ("rebind.evil.example:8080", "rebind.evil.example"),
            ("", ""),
        ] {
            assert_eq!(host_name(host), name, "{host}");
        }
    }
}
