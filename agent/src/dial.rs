//! How the agent dials the controller: the controller's gRPC endpoint, over
//! mutual TLS with this agent's identity unless the settings say plain
//! text. The link dials it for its session, the doctor to check the
//! handshake; it sits below both, so neither reaches into the other.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::config::{ControllerTrust, Settings};
use crate::identity::{Identity, IdentityError};

/// Why the controller's endpoint cannot be made; says it in the words of
/// what failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The controller's URL or the TLS settings are not usable.
    #[error("{0}")]
    Endpoint(#[from] tonic::transport::Error),
    /// This agent's identity cannot be read.
    #[error("{0}")]
    Identity(#[from] IdentityError),
    /// This agent is not enrolled: nothing to dial with.
    #[error("{0}")]
    NotEnrolled(String),
}

/// The controller's endpoint, over mutual TLS with this agent's identity
/// (read at each connection: a renewal replaces the file) unless the
/// configuration says plain text; with the identity's file. `url` is one
/// of the settings' controllers.
pub fn endpoint(
    settings: &Settings,
    url: &str,
) -> Result<(Endpoint, Option<(PathBuf, Identity)>), DialError> {
    if let ControllerTrust::NotEnrolled { why } = &settings.controller_trust {
        return Err(DialError::NotEnrolled(why.clone()));
    }
    let mut endpoint = Endpoint::from_shared(url.to_owned())?;
    let mut identity = None;
    if let ControllerTrust::Ca {
        pem,
        identity: identity_file,
        ..
    } = &settings.controller_trust
    {
        let ours = Identity::load(identity_file)?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(pem))
            .identity(tonic::transport::Identity::from_pem(
                &ours.certificate_pem,
                &ours.key_pem,
            ));
        endpoint = endpoint.tls_config(tls)?;
        identity = Some((identity_file.clone(), ours));
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    Ok((endpoint, identity))
}
