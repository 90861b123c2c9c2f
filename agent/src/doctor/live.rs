//! The checks that look at the running agent or the network: the local
//! portal, the controller (name, TCP, TLS, certificate, the link), what
//! `status.xml` says against what the controller published, an install
//! interrupted, the databases.

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::doctor::Check;

use crate::Agent;
use crate::config::ControllerTrust;
use crate::inventory::Inventory;
use crate::state::{DownloadState, LinkStatus};

/// How far this server's clock may be off the controller's before the
/// doctor warns, and fails (certificates, windows).
const CLOCK_WARN_MS: i64 = 5_000;
const CLOCK_FAIL_MS: i64 = 120_000;

/// How long a network step of a check may take.
const PATIENCE: Duration = Duration::from_secs(5);

/// The portal answers where it listens.
pub async fn portal(agent: &Agent) -> Check {
    let mut address = agent.portal_address;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    match tokio::time::timeout(PATIENCE, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Check::ok("portal", address.to_string(), "the local portal answers"),
        Ok(Err(e)) => Check::fail(
            "portal",
            address.to_string(),
            format!("the local portal does not answer: {e}"),
            "restart the agent's service; its log says why the portal stopped",
        ),
        Err(_) => Check::fail(
            "portal",
            address.to_string(),
            "the local portal does not answer within 5 s",
            "restart the agent's service",
        ),
    }
}

/// Why the agent's portal at `portal` (a URL) did not answer
/// `flotilla-agent doctor`: nothing listens (the agent does not run), or
/// another program holds the port (`other_program`: what it answered).
pub fn portal_unreachable(portal: &str, why: &str, other_program: Option<&str>) -> Check {
    let port = portal
        .parse::<tonic::codegen::http::Uri>()
        .ok()
        .and_then(|u| u.port_u16())
        .unwrap_or(8080);
    match other_program {
        Some(answer) => Check::fail(
            "portal",
            portal,
            format!(
                "another program answers on port {port}, not the agent ({answer}): the agent cannot start its portal there"
            ),
            format!(
                "stop that program (an older updater's service, such as \"[e] - service principal\" or \"Altazion - service principal\", uses port {port}), or set portal_listen in the agent's configuration"
            ),
        ),
        None => Check::fail(
            "portal",
            portal,
            format!("the agent does not answer: {why}"),
            "start the agent: `flotilla-agent service start` (or `flotilla-agent run`); the other checks ran without it",
        ),
    }
}

/// The controller: its name resolves, its port takes a connection, the TLS
/// handshake with this agent's certificate succeeds, the certificate is
/// valid, and the link is up.
pub async fn controller(agent: &Arc<Agent>) -> Vec<Check> {
    let settings = &agent.settings;
    let url = &settings.controller_url;
    let mut checks = Vec::new();
    let Some((host, port)) = host_and_port(url) else {
        return vec![Check::fail(
            "controller",
            url.clone(),
            "controller_url is not a URL with a host",
            "set controller_url = \"https://<controller>:7000\" in the agent's configuration",
        )];
    };
    let lookup = tokio::net::lookup_host(format!("{host}:{port}"));
    let addresses = match tokio::time::timeout(PATIENCE, lookup).await {
        Ok(Ok(found)) => found.collect::<Vec<_>>(),
        Ok(Err(e)) => {
            return vec![Check::fail(
                "controller",
                host,
                format!("the name does not resolve: {e}"),
                "check this server's DNS, or controller_url in the agent's configuration",
            )];
        }
        Err(_) => {
            return vec![Check::fail(
                "controller",
                host,
                "the name did not resolve within 5 s",
                "check this server's DNS servers",
            )];
        }
    };
    let Some(first) = addresses.first().copied() else {
        return vec![Check::fail(
            "controller",
            host,
            "the name resolves to no address",
            "check the DNS record",
        )];
    };
    match tokio::time::timeout(PATIENCE, tokio::net::TcpStream::connect(first)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return vec![Check::fail(
                "controller",
                first.to_string(),
                format!("{host} resolves, but TCP {port} does not take a connection: {e}"),
                format!(
                    "check that the controller runs and that a firewall lets this server reach TCP {port}"
                ),
            )];
        }
        Err(_) => {
            return vec![Check::fail(
                "controller",
                first.to_string(),
                format!("no TCP connection to port {port} within 5 s"),
                format!(
                    "a firewall probably drops TCP {port} between this server and the controller"
                ),
            )];
        }
    }
    match crate::dial::endpoint(settings, &settings.controller_url) {
        Ok((endpoint, identity)) => {
            let failure = match tokio::time::timeout(PATIENCE, endpoint.connect()).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(flotilla_proto::process::error_chain(&e)),
                Err(_) => Some("no answer within 5 s".to_owned()),
            };
            if let Some(e) = failure {
                checks.push(Check::fail(
                    "controller",
                    url.clone(),
                    format!(
                        "TCP connects, but the {} handshake fails: {e}",
                        if identity.is_some() { "TLS" } else { "HTTP/2" },
                    ),
                    "check the controller's CA (the identity folder), the server's clock, and that this agent's certificate was issued by that controller (`flotilla-agent enroll` again if not)",
                ));
            }
            if let Some((file, identity)) = identity {
                checks.push(certificate(&file, &identity));
            }
        }
        Err(e) => checks.push(Check::fail(
            "controller",
            url.clone(),
            e.to_string(),
            "enroll the agent: `flotilla-agent enroll --controller … --token … --ca-fingerprint …`",
        )),
    }
    if matches!(settings.controller_trust, ControllerTrust::Plaintext) {
        checks.push(Check::warn(
            "controller",
            url.clone(),
            "the link is plain text (insecure_plaintext = true): anyone on the network can read and change it",
            "enroll the agent and remove insecure_plaintext",
        ));
    }
    let last_heartbeat = *agent
        .last_heartbeat
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    checks.push(link(&agent.link.borrow(), last_heartbeat));
    checks
}

/// The agent's certificate: valid now, and not due for renewal.
fn certificate(file: &std::path::Path, identity: &crate::identity::Identity) -> Check {
    let now = chrono::Utc::now().timestamp();
    let not_after = identity.certificate.not_after;
    let until = chrono::DateTime::from_timestamp(not_after, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    if now >= not_after {
        Check::fail(
            "controller",
            file.display().to_string(),
            format!("this agent's certificate expired on {until}: the controller refuses it"),
            "enroll the agent again with a new token (`flotilla-agent enroll`)",
        )
    } else if identity.needs_renewal(now) {
        Check::warn(
            "controller",
            file.display().to_string(),
            format!("this agent's certificate is valid until {until} and due for renewal"),
            "the agent renews it while connected; if it does not, enroll it again",
        )
    } else {
        Check::ok(
            "controller",
            file.display().to_string(),
            format!("this agent's certificate is valid until {until}"),
        )
    }
}

/// The link's state as the agent holds it, and when the last heartbeat
/// went.
fn link(status: &LinkStatus, last_heartbeat: Option<chrono::DateTime<chrono::Utc>>) -> Check {
    let ago = |since: &chrono::DateTime<chrono::Utc>| (chrono::Utc::now() - *since).num_seconds();
    match status {
        LinkStatus::Connected {
            since,
            clock_skew_ms,
            heartbeat_every_ms,
        } => {
            let every = i64::try_from(*heartbeat_every_ms).unwrap_or(i64::MAX);
            let age = last_heartbeat.map(|at| (chrono::Utc::now() - at).num_milliseconds());
            let connected = format!(
                "connected for {} s, last heartbeat {} (every {:.1} s)",
                ago(since),
                age.map_or("not sent yet".to_owned(), |ms| format!(
                    "{} s ago",
                    ms / 1000
                )),
                every as f64 / 1000.0
            );
            if age.is_some_and(|ms| ms > every.saturating_mul(3)) {
                return Check::warn(
                    "controller",
                    "link",
                    format!("{connected}: heartbeats have stopped going out"),
                    "restart the agent's service; its log says what holds the link",
                );
            }
            match clock_skew_ms.map(|ms| ms.abs()) {
                Some(ms) if ms > CLOCK_FAIL_MS => Check::fail(
                    "controller",
                    "link",
                    format!(
                        "{connected}; but this server's clock is {} s off the controller's: certificates may be refused and maintenance windows missed",
                        ms / 1000
                    ),
                    "synchronise the clock (Windows: w32tm /resync; Linux: chrony or systemd-timesyncd)",
                ),
                Some(ms) if ms > CLOCK_WARN_MS => Check::warn(
                    "controller",
                    "link",
                    format!(
                        "{connected}; this server's clock is {:.1} s off the controller's",
                        ms as f64 / 1000.0
                    ),
                    "synchronise the clock (Windows: w32tm /resync; Linux: chrony or systemd-timesyncd)",
                ),
                Some(ms) => Check::ok(
                    "controller",
                    "link",
                    format!("{connected}; clocks agree within {ms} ms"),
                ),
                None => Check::ok("controller", "link", connected),
            }
        }
        LinkStatus::Connecting => Check::warn(
            "controller",
            "link",
            "still connecting for the first time",
            "wait a few seconds, then run the doctor again",
        ),
        LinkStatus::Disconnected { since, error } => Check::fail(
            "controller",
            "link",
            format!("disconnected for {} s: {error}", ago(since)),
            "see the checks above; the agent keeps retrying with backoff",
        ),
        LinkStatus::Refused { message, .. } => Check::fail(
            "controller",
            "link",
            format!("the controller refused this agent: {message}"),
            "upgrade the agent or the controller so that they speak the same protocol, or enroll it again",
        ),
    }
}

fn host_and_port(url: &str) -> Option<(String, u16)> {
    let uri: tonic::codegen::http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_matches(['[', ']']).to_owned();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    Some((host, port))
}

/// `status.xml` against what the controller published for this server:
/// every difference explained.
pub fn status(agent: &Arc<Agent>, inventory: &Inventory) -> Vec<Check> {
    let file = agent.settings.layout.status_file().display().to_string();
    let offers = agent
        .downloads
        .offers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if offers.is_empty() && !matches!(*agent.link.borrow(), LinkStatus::Connected { .. }) {
        return vec![Check::warn(
            "status",
            file,
            "the controller has not said what is published: status.xml shows only what is on disk",
            "see the controller checks",
        )];
    }
    let states = agent.downloads.states();
    let mut checks = Vec::new();
    for module in &inventory.modules {
        let name = module.name.as_str();
        let Some(newest) = offers
            .iter()
            .filter(|o| o.module == name)
            .max_by(|a, b| a.version.cmp(&b.version))
        else {
            continue;
        };
        let installed = module.installed_version.as_ref();
        let subject = format!("{name} {}", newest.version);
        if installed.is_some_and(|v| v >= &newest.version) {
            if installed.is_some_and(|v| v > &newest.version) {
                checks.push(Check::warn(
                    "status",
                    subject,
                    format!(
                        "installed {} is newer than the newest published {}",
                        installed.map(ToString::to_string).unwrap_or_default(),
                        newest.version
                    ),
                    "nothing to do unless it was installed by mistake",
                ));
            }
            continue;
        }
        if module.pending_version.as_ref() == Some(&newest.version) {
            checks.push(Check::ok(
                "status",
                subject,
                "published, downloaded and verified: ready to install",
            ));
            continue;
        }
        checks.push(match states.get(name) {
            Some(DownloadState::Downloading { received, total, .. }) => Check::ok(
                "status",
                subject,
                format!("published; downloading ({received} of {total} bytes)"),
            ),
            Some(DownloadState::Failed { why, .. }) => Check::warn(
                "status",
                subject,
                format!("published, but its download failed: {why}"),
                "the agent tries again; check the network path to the controller's packages",
            ),
            Some(DownloadState::Refused { why, .. }) => Check::fail(
                "status",
                subject,
                format!("published, but refused: {why}"),
                if agent.settings.trusted_keys.is_empty() {
                    "no publisher key is trusted: add the publisher's key to trusted_keys in the agent's configuration"
                } else {
                    "the package is not signed by a trusted publisher key: check trusted_keys, or ask the publisher"
                },
            )
            .blocking(),
            _ => Check::warn(
                "status",
                subject,
                "published but not downloaded yet",
                "wait for the download, or check the packages folder's rights",
            ),
        });
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            "status",
            file,
            "status.xml agrees with what the controller published",
        ));
    }
    checks
}

/// An interrupted install the agent did not recover (the running install's
/// own journal is not one).
pub fn journal(agent: &Arc<Agent>) -> Vec<Check> {
    let running = agent.installs.running();
    let mut checks = super::local::journal(&agent.settings);
    checks.retain(|c| {
        !running
            .as_ref()
            .is_some_and(|m| c.subject.ends_with(&format!("{m}.journal")))
    });
    if checks.is_empty() {
        checks.push(Check::ok(
            "journal",
            agent.settings.install.journal_dir.display().to_string(),
            "no interrupted install",
        ));
    }
    checks
}

/// Each database module's database: it connects, and a pending upgrade
/// finds the standard schema it expects.
pub async fn databases(agent: &Arc<Agent>, inventory: &Inventory) -> Vec<Check> {
    let mut checks = Vec::new();
    for module in &inventory.modules {
        let name = module.name.as_str();
        if !agent.settings.databases.contains_key(name) {
            continue;
        }
        let db = match crate::databases::connect(agent, name).await {
            Ok(db) => db,
            Err(e) => {
                checks.push(
                    Check::fail(
                        "database",
                        name,
                        format!("cannot connect: {e}"),
                        format!("check [databases.{name}] in the agent's configuration, the database server, and the account's rights"),
                    )
                    .blocking(),
                );
                continue;
            }
        };
        db.close().await;
        checks.push(match crate::databases::review(agent, name).await {
            Ok(review) if review.standard => Check::ok(
                "database",
                name,
                format!(
                    "connects; the standard schema of {}: the upgrade to {} runs by itself",
                    review.from_version, review.to_version
                ),
            ),
            Ok(review) if review.done => Check::ok(
                "database",
                name,
                format!("connects; the guided upgrade to {} is done", review.to_version),
            ),
            Ok(review) => Check::warn(
                "database",
                name,
                format!(
                    "customized ({} difference(s) from the standard {}: {}): an install waits for a guided upgrade",
                    review.summary.len(),
                    review.from_version,
                    review.summary.join(", ")
                ),
                format!("review it: the portal's /database/{name} or the dashboard's database page"),
            )
            .blocking(),
            Err(crate::databases::ReviewError::NotFound(_)) => Check::ok(
                "database",
                name,
                "connects; no upgrade is pending",
            ),
            Err(e) => Check::fail(
                "database",
                name,
                format!("connects, but cannot be compared with its standard: {e}"),
                "check the account's rights to read the catalog",
            )
            .blocking(),
        });
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::doctor::Status;

    #[test]
    fn the_link_is_judged_by_its_clock_and_its_heartbeats() {
        let connected = |skew: Option<i64>| LinkStatus::Connected {
            since: chrono::Utc::now(),
            clock_skew_ms: skew,
            heartbeat_every_ms: 10_000,
        };
        let now = Some(chrono::Utc::now());
        assert_eq!(link(&connected(Some(300)), now).status, Status::Ok);
        let warned = link(&connected(Some(-9_000)), now);
        assert_eq!(warned.status, Status::Warn);
        assert!(warned.finding.contains("9.0 s off"), "{warned:?}");
        let failed = link(&connected(Some(600_000)), now);
        assert_eq!(failed.status, Status::Fail);
        assert!(failed.fix.contains("w32tm /resync"), "{failed:?}");
        assert_eq!(link(&connected(None), now).status, Status::Ok);
        // Heartbeats stopped going out, though the link says connected.
        let stale = link(
            &connected(Some(0)),
            Some(chrono::Utc::now() - chrono::Duration::seconds(45)),
        );
        assert_eq!(stale.status, Status::Warn);
        assert!(
            stale
                .finding
                .contains("last heartbeat 45 s ago (every 10.0 s)"),
            "{stale:?}"
        );
        let away = link(
            &LinkStatus::Disconnected {
                since: chrono::Utc::now(),
                error: "connection refused".into(),
            },
            None,
        );
        assert_eq!(away.status, Status::Fail);
        assert!(away.finding.contains("connection refused"), "{away:?}");
    }
}
