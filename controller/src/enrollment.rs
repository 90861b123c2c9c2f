//! Agents' identities: enrollment tokens, the certificates the controller
//! issues to agents, their renewal and revocation. Their REST endpoints are
//! [`crate::api::enrollment`].
//!
//! An admin creates a one-time, expiring token for one server id and site.
//! The agent (`flotilla-agent enroll`) makes its key, sends a certificate
//! request with the token, and gets a certificate whose identity is that
//! server and site. From then on the gRPC endpoint knows the agent by that
//! certificate alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use flotilla_proto::tls::{AgentCertificate, AgentIdentity};

use crate::db::{Database, Revocations};
use crate::tls::{AgentCa, IssueError, Issued};

/// How long an enrollment token lasts unless its creator says otherwise.
pub const DEFAULT_TOKEN_MINUTES: i64 = 60;
/// The longest an enrollment token may last: a week.
pub const MAX_TOKEN_MINUTES: i64 = 7 * 24 * 60;

/// The controller's side of agents' identities.
#[derive(Debug)]
pub struct Enrollment {
    pub(crate) ca: Arc<AgentCa>,
    /// The CA an agent must trust for the controller's own certificate,
    /// and its fingerprint, which the operator gives `flotilla-agent enroll`.
    pub server_ca_pem: String,
    pub server_ca_fingerprint: String,
    /// How long an agent's certificate is valid.
    pub lifetime: Duration,
    /// What an enrolling agent is told besides its certificate, so that
    /// one URL is all `flotilla-agent join` needs.
    pub joining: Joining,
    /// What is revoked, in memory: checked at every connection.
    revoked: Mutex<Revocations>,
}

/// Why an agent's certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("its certificate states no agent identity: {0}")]
    NoIdentity(String),
    #[error("{0} is revoked: enroll it again with a new token")]
    ServerRevoked(AgentIdentity),
    #[error("certificate {serial} of {identity} is revoked")]
    CertificateRevoked {
        serial: String,
        identity: AgentIdentity,
    },
}

/// What an agent learns at enrollment besides its certificate and the CA.
#[derive(Debug, Clone, Default)]
pub struct Joining {
    /// Where agents connect (gRPC): `--agents-url`, or this controller's
    /// public host on its gRPC port.
    pub agents_urls: Vec<String>,
    /// The publisher keys (Ed25519, hex) agents trust packages from:
    /// `--publisher-key`. They come over the connection the operator pinned
    /// with the CA's fingerprint, as the certificate does.
    pub publisher_keys: Vec<String>,
}

impl Enrollment {
    pub async fn new(
        db: &Database,
        ca: Arc<AgentCa>,
        server_ca_pem: String,
        server_ca_fingerprint: String,
        lifetime: Duration,
        joining: Joining,
    ) -> sqlx::Result<Self> {
        Ok(Enrollment {
            ca,
            server_ca_pem,
            server_ca_fingerprint,
            lifetime,
            joining,
            revoked: Mutex::new(db.revocations().await?),
        })
    }

    /// Revokes `server`, as `by` asked: its certificates are refused from
    /// now on, here and by the controllers sharing the database, and its
    /// connection is closed. Whether it was connected here.
    pub async fn revoke_server(
        &self,
        fleet: &crate::fleet::Fleet,
        server: &flotilla_proto::domain::ServerId,
        by: &str,
    ) -> sqlx::Result<bool> {
        let live = fleet.certificate_of(server);
        let recorded = fleet.db.certificates_of(server.as_str()).await?;
        fleet
            .db
            .revoke_server(
                server.as_str(),
                live.as_ref()
                    .map(|c| (c.serial.as_str(), c.identity.site.as_str())),
                by,
                chrono::Utc::now(),
            )
            .await?;
        {
            let mut revoked = self.revoked();
            revoked.servers.insert(server.to_string());
            revoked
                .serials
                .extend(recorded.into_iter().map(|c| c.serial));
            if let Some(certificate) = &live {
                revoked.serials.insert(certificate.serial.clone());
            }
        }
        let disconnected = fleet
            .end_connection(server, &format!("revoked by {by}"))
            .await;
        // Controllers sharing the database refuse it too, and end its
        // connection if it is theirs.
        if let Some(relay) = fleet.relay() {
            relay.note(format!("v:{server}"));
        }
        tracing::warn!(by, %server, disconnected, "server revoked");
        Ok(disconnected)
    }

    /// Reads what is revoked again (another controller on the database
    /// revoked a server).
    pub async fn reload(&self, db: &Database) -> sqlx::Result<()> {
        let revocations = db.revocations().await?;
        *self.revoked() = revocations;
        Ok(())
    }

    pub(crate) fn revoked(&self) -> std::sync::MutexGuard<'_, Revocations> {
        self.revoked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent a connection's certificate (DER) proves, unless it is
    /// refused. The TLS handshake has checked it was issued by this
    /// controller's CA and is within its validity.
    pub fn admit(&self, der: &[u8]) -> Result<AgentCertificate, Refusal> {
        let certificate = AgentCertificate::parse(der).map_err(Refusal::NoIdentity)?;
        let revoked = self.revoked();
        if revoked
            .servers
            .contains(certificate.identity.server.as_str())
        {
            return Err(Refusal::ServerRevoked(certificate.identity));
        }
        if revoked.serials.contains(&certificate.serial) {
            return Err(Refusal::CertificateRevoked {
                serial: certificate.serial,
                identity: certificate.identity,
            });
        }
        Ok(certificate)
    }

    /// A new certificate for a connected agent's new key, same identity.
    pub async fn renew(
        &self,
        db: &Database,
        presented: &AgentCertificate,
        csr_pem: &str,
    ) -> Result<Issued, RenewError> {
        let identity = &presented.identity;
        let issued = self.ca.issue(csr_pem, identity, self.lifetime)?;
        let recorded = db
            .record_renewal(
                &issued.serial,
                &presented.serial,
                identity.server.as_str(),
                identity.site.as_str(),
                Utc::now(),
                issued.not_after,
            )
            .await?;
        if !recorded {
            tracing::warn!(server = %identity.server, site = %identity.site, "refused to renew the certificate of a server revoked meanwhile");
            return Err(RenewError::Revoked);
        }
        tracing::info!(server = %identity.server, site = %identity.site, serial = %issued.serial, not_after = %issued.not_after, "agent certificate renewed");
        Ok(issued)
    }
}

/// Why a renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error("cannot record the certificate: {0}")]
    Store(#[from] sqlx::Error),
    #[error("the server or its certificate was revoked: enroll it again")]
    Revoked,
}
