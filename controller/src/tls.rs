//! The controller's TLS: its identity and the HTTPS server.
//!
//! By default the controller is its own certificate authority: at first
//! start it creates a CA with `rcgen` in its TLS folder (`ca.pem`, and
//! `ca-key.pem` readable by its owner only), and at every start it issues
//! itself a fresh server certificate from that CA for the names agents and
//! browsers use. Agents trust `ca.pem`, whose fingerprint the controller
//! prints. An operator may instead give the server certificate chain and key
//! as PEM files. Plain text is only ever served behind `--insecure-plaintext`.
//!
//! The same CA issues agents their client certificates ([`AgentCa`]), whose
//! subject alternative name states the agent's site and server id; the gRPC
//! endpoint accepts only agents holding one ([`grpc_incoming`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, Utc};
use flotilla_proto::tls::{
    AgentIdentity, PemError, fingerprint, read_certificates, write_pem_file,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The CA certificate agents trust, in the TLS folder.
pub const CA_FILE: &str = "ca.pem";
/// The CA's private key, next to it, readable by the controller's owner only.
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// How long a generated CA is valid.
const CA_DAYS: i64 = 3650;
/// How long a server certificate is valid; a new one is issued at each start.
const SERVER_DAYS: i64 = 397;
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the controller cannot set up TLS; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{path} holds no usable private key: {message}")]
    Key { path: PathBuf, message: String },
    #[error("cannot create a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the server certificate and key cannot be used together: {0}")]
    Config(#[from] rustls::Error),
    #[error("the certificate authority cannot check agents' certificates: {0}")]
    Verifier(String),
}

/// Why a certificate request was not signed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("csr: not a PEM certificate signing request the controller can read: {0}")]
    Request(String),
    #[error("cannot sign the certificate: {0}")]
    Sign(#[from] rcgen::Error),
}

/// The controller's CA as the issuer of agents' client certificates.
pub struct AgentCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    roots: Arc<rustls::RootCertStore>,
}

impl std::fmt::Debug for AgentCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCa").finish_non_exhaustive()
    }
}

/// A certificate issued to an agent.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The agent's certificate, then the CA's, PEM.
    pub chain_pem: String,
    /// Lowercase hex, as [`AgentCertificate::serial`] reads it back.
    pub serial: String,
    pub not_after: chrono::DateTime<Utc>,
}

impl AgentCa {
    /// The controller's own CA in `dir`, created at first start.
    pub fn own(dir: &Path) -> Result<AgentCa, TlsError> {
        let (ca_pem, key) = own_ca(dir)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)?;
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let certificate = certificate.map_err(|e| TlsError::Read {
                path: dir.join(CA_FILE),
                message: e.to_string(),
            })?;
            roots.add(certificate)?;
        }
        Ok(AgentCa {
            issuer,
            ca_pem,
            roots: Arc::new(roots),
        })
    }

    /// Signs the agent's request (its key never leaves the agent) with the
    /// identity the controller decided, valid for `lifetime` from now. What
    /// the request itself asks for, beyond its public key, is ignored.
    pub fn issue(
        &self,
        csr_pem: &str,
        identity: &AgentIdentity,
        lifetime: Duration,
    ) -> Result<Issued, IssueError> {
        let mut request = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| IssueError::Request(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, identity.server.as_str());
        name.push(DnType::OrganizationalUnitName, identity.site.as_str());
        params.distinguished_name = name;
        let uri = rcgen::string::Ia5String::try_from(identity.uri())
            .map_err(|e| IssueError::Request(e.to_string()))?;
        params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let serial: [u8; 16] = rand_serial();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let now = time::OffsetDateTime::now_utc();
        let lifetime = time::Duration::try_from(lifetime).unwrap_or(time::Duration::days(30));
        // A little back, for agents whose clock runs behind: five minutes,
        // or a tenth of a short lifetime.
        params.not_before = now - (lifetime / 10_i32).min(time::Duration::minutes(5));
        params.not_after = now + lifetime;
        request.params = params;
        let certificate = request.signed_by(&self.issuer)?;
        let not_after =
            Utc::now() + chrono::Duration::from_std(lifetime.unsigned_abs()).unwrap_or_default();
        Ok(Issued {
            chain_pem: format!("{}{}", certificate.pem(), self.ca_pem),
            serial: serial.iter().map(|b| format!("{b:02x}")).collect(),
            not_after,
        })
    }

    /// The gRPC endpoint's TLS configuration: `identity`'s certificate, and
    /// a client certificate from this CA required of every agent.
    pub fn grpc_config(&self, identity: &Identity) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let (chain, key) = identity.certificate_and_key()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// A random certificate serial number: 16 bytes, positive.
fn rand_serial() -> [u8; 16] {
    let mut serial = flotilla_proto::web::random_bytes::<16>();
    // Positive, and not starting with a zero byte (DER would drop it).
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial
}

/// The agents' connections on `listener`, each through the TLS handshake
/// of `config` (which requires a client certificate); a handshake that
/// fails is logged with its reason and the peer, and goes no further.
pub fn grpc_incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<
    Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (sender, receiver) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!("cannot accept an agent's connection: {e}");
                        // Out of file descriptors, say: let some close.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, "refused an agent's connection: {}", handshake_reason(&e));
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "refused an agent's connection: the TLS handshake did not finish within {HANDSHAKE_TIMEOUT:?}");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// A failed handshake's reason, in an operator's words.
fn handshake_reason(error: &std::io::Error) -> String {
    use rustls::{CertificateError, Error};
    let rustls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>());
    match rustls {
        Some(Error::NoCertificatesPresented) => {
            "no client certificate: the agent is not enrolled (flotilla-agent enroll)".to_owned()
        }
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "its client certificate was not issued by this controller's CA".to_owned()
        }
        Some(Error::InvalidCertificate(CertificateError::Expired))
        | Some(Error::InvalidCertificate(CertificateError::ExpiredContext { .. })) => {
            "its client certificate has expired: enroll the agent again".to_owned()
        }
        Some(other) => format!("TLS: {other}"),
        None => format!("TLS: {error}"),
    }
}

/// The certificate the controller serves, and the CA that vouches for it.
#[derive(Clone)]
pub struct Identity {
    /// The CA certificate agents and browsers trust, PEM.
    pub ca_pem: String,
    /// `sha256:…` of the CA certificate.
    pub ca_fingerprint: String,
    /// The server certificate, then its chain, PEM.
    pub chain_pem: String,
    /// The server's private key, PEM. Never logged.
    key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("key_pem", &"<hidden>")
            .finish_non_exhaustive()
    }
}

/// Makes `params` valid from yesterday for `days` days.
fn valid_for(params: &mut CertificateParams, days: i64) {
    let date = |days: i64| {
        let day = (Utc::now() + chrono::Duration::days(days)).date_naive();
        rcgen::date_time_ymd(
            day.year(),
            u8::try_from(day.month()).unwrap_or(1),
            u8::try_from(day.day()).unwrap_or(1),
        )
    };
    params.not_before = date(-1);
    params.not_after = date(days);
}

/// [`write_pem_file`], naming the file in the error.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    write_pem_file(path, contents, secret).map_err(|e| TlsError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn read_file(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The controller's own CA in `dir`, created there if it has none yet.
/// Returns the CA's PEM and its signing key.
fn own_ca(dir: &Path) -> Result<(String, KeyPair), TlsError> {
    let (cert_path, key_path) = (dir.join(CA_FILE), dir.join(CA_KEY_FILE));
    if cert_path.exists() {
        // Whoever reads the CA's key can issue certificates for any server,
        // or for this controller: closed to others at each start.
        for path in [dir, key_path.as_path()] {
            if let Ok(Some(grant)) = flotilla_proto::acl::readable_by_others(path) {
                match flotilla_proto::acl::restrict(path) {
                    Ok(()) => {
                        tracing::warn!(path = %path.display(), %grant, "other users could read the CA's key: it is now this account's and the administrators' only")
                    }
                    Err(e) => {
                        tracing::error!(path = %path.display(), %grant, "other users can read the CA's key, and it cannot be restricted: {e}")
                    }
                }
            }
        }
        let key_pem = read_file(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Key {
            path: key_path.clone(),
            message: e.to_string(),
        })?;
        return Ok((read_file(&cert_path)?, key));
    }
    std::fs::create_dir_all(dir)
        .and_then(|()| flotilla_proto::acl::restrict(dir))
        .map_err(|e| TlsError::Write {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Flotilla controller CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    valid_for(&mut params, CA_DAYS);
    let certificate = params.self_signed(&key)?;
    // The key first: a CA certificate on disk always has its key.
    write_file(&key_path, &key.serialize_pem(), true)?;
    write_file(&cert_path, &certificate.pem(), false)?;
    tracing::info!(ca = %cert_path.display(), "created the controller's certificate authority");
    Ok((certificate.pem(), key))
}

impl Identity {
    /// The controller's own CA in `dir` (created at first start) and a new
    /// server certificate from it for `names` (host names and addresses).
    pub fn own(dir: &Path, names: &[String]) -> Result<Identity, TlsError> {
        let (ca_pem, ca_key) = own_ca(dir)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            names.first().map_or("flotilla-controller", String::as_str),
        );
        params.distinguished_name = name;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        valid_for(&mut params, SERVER_DAYS);
        let certificate = params.signed_by(&key, &issuer)?;
        let ca_der =
            CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| TlsError::Read {
                path: dir.join(CA_FILE),
                message: e.to_string(),
            })?;
        Ok(Identity {
            ca_fingerprint: fingerprint(&ca_der),
            chain_pem: format!("{}{}", certificate.pem(), ca_pem),
            ca_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// The operator's server certificate chain and key (PEM files). The CA
    /// agents trust is the chain's last certificate.
    pub fn from_files(chain: &Path, key: &Path) -> Result<Identity, TlsError> {
        let (chain_pem, certificates) = read_certificates(chain)?;
        let key_pem = read_file(key)?;
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Key {
            path: key.to_path_buf(),
            message: e.to_string(),
        })?;
        // read_certificates never returns an empty chain.
        let ca = certificates.last().cloned().ok_or(PemError::Empty {
            path: chain.to_path_buf(),
        })?;
        // The last PEM block of the chain, as written.
        let marker = "-----BEGIN CERTIFICATE-----";
        let ca_pem = chain_pem
            .rfind(marker)
            .map(|start| chain_pem[start..].to_owned())
            .unwrap_or_default();
        let identity = Identity {
            ca_fingerprint: fingerprint(&ca),
            ca_pem,
            chain_pem,
            key_pem,
        };
        // Refuse a key that does not match the certificate now, not at the first client.
        identity.server_config()?;
        Ok(identity)
    }

    /// The certificate chain and its key, parsed.
    #[allow(clippy::type_complexity)]
    fn certificate_and_key(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let chain = CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
        Ok((chain, key))
    }

    /// The HTTPS server's configuration (HTTP/2 and HTTP/1.1).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let (chain, key) = self.certificate_and_key()?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_ca_is_created_once_and_kept_and_its_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = Identity::own(dir.path(), &names).unwrap();
        let second = Identity::own(dir.path(), &names).unwrap();
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_eq!(first.ca_fingerprint, second.ca_fingerprint);
        assert_ne!(
            first.chain_pem, second.chain_pem,
            "a new server certificate each start"
        );
        assert!(first.ca_fingerprint.starts_with("sha256:") && first.ca_fingerprint.len() == 71);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o077,
                0,
                "the CA key is readable by others: {mode:o}"
            );
        }
        assert!(!format!("{first:?}").contains("PRIVATE KEY"));
        first.server_config().unwrap();
    }

    #[test]
    fn operator_files_are_checked_at_start_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let own = Identity::own(dir.path(), &["localhost".to_owned()]).unwrap();
        let chain = dir.path().join("chain.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&chain, &own.chain_pem).unwrap();
        std::fs::write(&key, &own.key_pem).unwrap();
        let given = Identity::from_files(&chain, &key).unwrap();
        assert_eq!(given.ca_fingerprint, own.ca_fingerprint);
        assert_eq!(given.ca_pem.trim(), own.ca_pem.trim());

        // Another key does not go with this certificate.
        let other = Identity::own(&dir.path().join("other"), &["localhost".to_owned()]).unwrap();
        std::fs::write(&key, &other.key_pem).unwrap();
        let error = Identity::from_files(&chain, &key).unwrap_err().to_string();
        assert!(error.contains("cannot be used together"), "{error}");
        std::fs::write(&key, "garbage").unwrap();
        let error = Identity::from_files(&chain, &key).unwrap_err().to_string();
        assert!(error.contains("key.pem"), "{error}");
    }
}
