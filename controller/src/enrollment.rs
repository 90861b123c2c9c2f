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

impl Enrollment {
    pub async fn new(
        db: &Database,
        ca: Arc<AgentCa>,
        server_ca_pem: String,
        server_ca_fingerprint: String,
        lifetime: Duration,
    ) -> sqlx::Result<Self> {
        Ok(Enrollment {
            ca,
            server_ca_pem,
            server_ca_fingerprint,
            lifetime,
            revoked: Mutex::new(db.revocations().await?),
        })
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
        identity: &AgentIdentity,
        csr_pem: &str,
    ) -> Result<Issued, RenewError> {
        let issued = self.ca.issue(csr_pem, identity, self.lifetime)?;
        db.record_renewal(
            &issued.serial,
            identity.server.as_str(),
            identity.site.as_str(),
            Utc::now(),
            issued.not_after,
        )
        .await?;
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
}
