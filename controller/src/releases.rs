//! The content-addressed package store, `<data>/packages/<sha256>.zip`,
//! and the rule for URLs the controller calls or names (HTTPS, a host on an
//! allowlist, no credentials). Publishing and serving releases over REST is
//! [`crate::api::releases`].

use std::path::PathBuf;

/// Where package files live.
#[derive(Debug)]
pub struct PackageStore {
    dir: PathBuf,
    /// Names each upload's temporary file.
    uploads: std::sync::atomic::AtomicU64,
}

impl PackageStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            uploads: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Where the package with this sha256 is (or would be) stored.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.zip"))
    }

    /// A new temporary file beside the store for an upload of `sha256`.
    pub fn upload_path(&self, sha256: &str) -> PathBuf {
        let upload = self
            .uploads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.join(format!(".{sha256}.{upload}.upload"))
    }
}

/// Whether a package may be fetched from `url`: HTTPS only, from a host
/// and port on the allowlist (`--package-host`, and the controller's own),
/// with no credentials in it.
pub fn check_package_url(url: &str, hosts: &[String]) -> Result<(), String> {
    check_url(url, hosts, "package hosts (--package-host)").map(|_| ())
}

/// Whether the controller may call `url`: HTTPS only, to a host and port on
/// the allowlist `hosts` (named `list` in the error), with no credentials in
/// it. An entry `host` allows port 443 only, `host:port` that port, and
/// `host:*` any port. Returns the URL's host and port, for
/// [`check_resolves_publicly`].
pub fn check_url(url: &str, hosts: &[String], list: &str) -> Result<(String, u16), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("\"{url}\" is not a URL: {e}"))?;
    if parsed.scheme() != "https" {
        return Err(format!(
            "only https:// URLs are accepted, not {}://",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("a URL with credentials in it is refused".to_owned());
    }
    let host = parsed.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = parsed.port_or_known_default().unwrap_or(443);
    if !hosts.iter().any(|entry| allows(entry, host, port)) {
        return Err(format!(
            "the host \"{host}\" on port {port} is not on the allowlist of {list}: {}",
            if hosts.is_empty() {
                "none".to_owned()
            } else {
                hosts.join(", ")
            }
        ));
    }
    Ok((host.to_owned(), port))
}

/// Whether the allowlist entry `entry` (`host`, `host:port`, `host:*`,
/// `[v6]:port`) allows `host` on `port`.
fn allows(entry: &str, host: &str, port: u16) -> bool {
    let (name, allowed) = match entry.rsplit_once(':') {
        // A bare IPv6 address has colons but no port.
        Some((name, port)) if !name.contains(':') || name.ends_with(']') => (name, Some(port)),
        _ => (entry, None),
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case(host)
        && match allowed {
            None => port == 443,
            Some("*") => true,
            Some(allowed) => allowed.parse() == Ok(port),
        }
}

/// Refuses a host *name* that resolves to an internal address (loopback,
/// private, link-local such as a cloud's metadata service, shared, unique
/// local): an allowed name pointed inside would let a URL reach what the
/// controller's network shields. An address written as such was allowed
/// on purpose and is not looked up.
pub async fn check_resolves_publicly(host: &str, port: u16) -> Result<(), String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let addresses = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("the host \"{host}\" cannot be resolved: {e}"))?;
    match addresses.map(|a| a.ip()).find(|ip| internal(*ip)) {
        Some(ip) => Err(format!(
            "the host \"{host}\" resolves to the internal address {ip}: name it by its address on the allowlist if it is meant"
        )),
        None => Ok(()),
    }
}

/// Whether `ip` is an address inside a network rather than on the Internet.
pub fn internal(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => internal(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
            }
        },
    }
}

/// A resolver for the controller's outgoing calls (webhooks) that never
/// connects a host name to an internal address, checked at each call: a
/// name that resolved publicly when it was allowed cannot be repointed
/// inside later. Addresses written in a URL are not resolved, so an
/// address allowed as such still works.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(inside) = addresses.iter().find(|a| internal(a.ip())) {
                return Err(format!(
                    "the host \"{host}\" resolves to the internal address {}",
                    inside.ip()
                )
                .into());
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_allows_its_port_only() {
        let hosts = [
            "cdn.example".to_owned(),
            "hooks.example:8443".to_owned(),
            "10.1.2.3:*".to_owned(),
            "[::1]:9000".to_owned(),
            "fd00::1".to_owned(),
        ];
        let check = |url: &str| check_url(url, &hosts, "test").map(|_| ());
        assert!(check("https://cdn.example/p.zip").is_ok());
        assert!(check("https://cdn.example:443/p.zip").is_ok());
        let refused = check("https://cdn.example:8080/p.zip");
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("on port 8080 is not on the allowlist")),
            "{refused:?}"
        );
        assert!(check("https://hooks.example:8443/x").is_ok());
        assert!(check("https://hooks.example/x").is_err());
        assert!(check("https://10.1.2.3:1/x").is_ok());
        assert!(check("https://[::1]:9000/x").is_ok());
        assert!(check("https://[::1]:9001/x").is_err());
        assert!(check("https://[fd00::1]/x").is_ok());
    }

    #[test]
    fn internal_addresses_are_known() {
        for inside in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd12::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(
                internal(inside.parse().unwrap_or(std::net::IpAddr::from([0; 4]))),
                "{inside}"
            );
        }
        for outside in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            let ip: std::net::IpAddr = outside.parse().unwrap_or(std::net::IpAddr::from([0; 4]));
            assert!(!internal(ip), "{outside}");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_inside_is_refused_and_an_address_is_not_looked_up() {
        let refused = check_resolves_publicly("localhost", 443).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("resolves to the internal address")),
            "{refused:?}"
        );
        assert!(check_resolves_publicly("127.0.0.1", 443).await.is_ok());
    }
}
