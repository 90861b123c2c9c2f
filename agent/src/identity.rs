//! The agent's identity: its key and certificate, made by enrolling with the
//! controller, and renewed before they expire.
//!
//! The key is made here and never leaves the server. The key and the
//! certificate live together in one file, `<data>/identity/agent.pem`,
//! readable by the service's identity only and replaced in one rename, so
//! that a key and a certificate that do not match are never on disk. The
//! controller's CA is beside it, in `controller-ca.pem`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flotilla_proto::tls::{AgentCertificate, fingerprint, write_pem_file};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;

/// The file holding the agent's certificate chain and key.
pub const IDENTITY_FILE: &str = "agent.pem";
/// The CA the agent trusts for the controller's own certificate.
pub const CONTROLLER_CA_FILE: &str = "controller-ca.pem";

/// What went wrong with the identity; names the file or the controller.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot make a key: {0}")]
    Key(#[from] rcgen::Error),
    #[error("cannot enroll with {controller}: {message}")]
    Enroll { controller: String, message: String },
}

/// The agent's key and certificate, as read from its file.
#[derive(Clone)]
pub struct Identity {
    /// The certificate, then the CA's, PEM.
    pub certificate_pem: String,
    /// The private key, PEM. Never logged.
    pub key_pem: String,
    pub certificate: AgentCertificate,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("certificate", &self.certificate)
            .field("key_pem", &"<hidden>")
            .finish()
    }
}

impl Identity {
    /// Reads the identity file.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let text = std::fs::read_to_string(path).map_err(|e| IdentityError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Identity, IdentityError> {
        let invalid = |message: String| IdentityError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let key_start = text
            .find("-----BEGIN PRIVATE KEY-----")
            .ok_or_else(|| invalid("holds no private key".to_owned()))?;
        let (certificate_pem, key_pem) = text.split_at(key_start);
        let certificate = AgentCertificate::from_pem(certificate_pem).map_err(invalid)?;
        Ok(Identity {
            certificate_pem: certificate_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            certificate,
        })
    }

    /// Writes the certificate and key to `path` in one rename, readable by
    /// the owner only.
    pub fn save(
        path: &Path,
        certificate_pem: &str,
        key_pem: &str,
    ) -> Result<Identity, IdentityError> {
        let text = format!("{}{key_pem}", with_newline(certificate_pem));
        let identity = Self::parse(path, &text)?;
        write_file(path, &text, true)?;
        Ok(identity)
    }

    /// When the certificate should be renewed (Unix seconds): when a third
    /// of its validity is left.
    pub fn renewal_time(&self) -> i64 {
        let AgentCertificate {
            not_before,
            not_after,
            ..
        } = self.certificate;
        not_after - (not_after - not_before) / 3
    }

    /// Whether the certificate should be renewed now.
    pub fn needs_renewal(&self, now_unix: i64) -> bool {
        now_unix >= self.renewal_time()
    }

    /// How long until [`Identity::renewal_time`].
    pub fn until_renewal(&self) -> std::time::Duration {
        let left = self.renewal_time() - chrono::Utc::now().timestamp();
        std::time::Duration::from_secs(u64::try_from(left).unwrap_or(0))
    }
}

fn with_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

/// Closes the agent's secrets to other users at start: the identity folder
/// and what it holds, when anyone but the agent's account and the
/// administrators can read them (a folder made by hand, an ACL inherited
/// from `%PROGRAMDATA%`), each change logged.
pub fn keep_private(folder: &Path) {
    if !folder.exists() {
        return;
    }
    let files = std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for path in std::iter::once(folder.to_path_buf()).chain(files) {
        match flotilla_proto::acl::readable_by_others(&path) {
            Ok(None) => {}
            Ok(Some(grant)) => match flotilla_proto::acl::restrict(&path) {
                Ok(()) => {
                    tracing::warn!(path = %path.display(), %grant, "other users could read this secret: it is now the agent's account's and the administrators' only")
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), %grant, "other users can read this secret, and it cannot be restricted: {e}")
                }
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read who may read this secret: {e}")
            }
        }
    }
}

/// [`write_pem_file`], naming the file in the error.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), IdentityError> {
    write_pem_file(path, contents, secret).map_err(|e| IdentityError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A new key and a certificate request for it: the controller decides the
/// identity, so the request names none.
pub fn new_request() -> Result<(String, String), IdentityError> {
    let key = rcgen::KeyPair::generate()?;
    let request = rcgen::CertificateParams::default().serialize_request(&key)?;
    Ok((request.pem()?, key.serialize_pem()))
}

/// What the controller answers an enrollment.
#[derive(Debug, Deserialize)]
struct Answer {
    server: String,
    site: String,
    certificate: String,
    controller_ca: String,
    /// Absent from controllers before `join`.
    #[serde(default)]
    agents_urls: Vec<String>,
    #[serde(default)]
    publisher_keys: Vec<String>,
}

/// An enrollment done: the identity written, and what the controller said
/// the agent needs besides.
#[derive(Debug)]
pub struct Enrolled {
    pub identity: Identity,
    /// Where agents connect (gRPC): the agent's `controller_url`.
    pub agents_urls: Vec<String>,
    /// The publisher keys to trust packages from: its `trusted_keys`.
    pub publisher_keys: Vec<String>,
}

/// Enrolls this agent with the controller at `controller` (its HTTPS
/// address) using a one-time `token`, trusting the controller only if its
/// certificate chains to a CA whose fingerprint is `ca_fingerprint`. Writes
/// the identity and the controller's CA into `dir`.
pub async fn enroll(
    dir: &Path,
    controller: &str,
    token: &str,
    ca_fingerprint: &str,
) -> Result<Enrolled, IdentityError> {
    let failed = |message: String| IdentityError::Enroll {
        controller: controller.to_owned(),
        message,
    };
    let pinned = ca_fingerprint.trim().to_lowercase();
    if !pinned.starts_with("sha256:") || pinned.len() != 71 {
        return Err(failed(format!(
            "--ca-fingerprint \"{ca_fingerprint}\" is not sha256: and 64 hex digits, as the controller prints it"
        )));
    }
    if !controller.starts_with("https://") {
        return Err(failed(
            "--controller must be the controller's https:// address".to_owned(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCa {
        fingerprint: pinned.clone(),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let (csr, key) = new_request()?;
    let response = client
        .post(format!(
            "{}/api/v1/enroll",
            controller.trim_end_matches('/')
        ))
        .json(&serde_json::json!({"token": token, "csr": csr}))
        .send()
        .await
        .map_err(|e| failed(flotilla_proto::process::error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["message"].as_str().unwrap_or("no explanation");
        return Err(failed(format!("refused ({status}): {message}")));
    }
    let enrolled: Answer = response
        .json()
        .await
        .map_err(|e| failed(format!("unreadable answer: {e}")))?;
    let ca = CertificateDer::pem_slice_iter(enrolled.controller_ca.as_bytes())
        .last()
        .and_then(Result::ok)
        .ok_or_else(|| failed("its answer holds no CA certificate".to_owned()))?;
    if fingerprint(&ca) != pinned {
        return Err(failed(format!(
            "the CA it sent has fingerprint {}, not {pinned}",
            fingerprint(&ca)
        )));
    }
    write_file(
        &dir.join(CONTROLLER_CA_FILE),
        &enrolled.controller_ca,
        false,
    )?;
    let identity = Identity::save(&dir.join(IDENTITY_FILE), &enrolled.certificate, &key)?;
    if identity.certificate.identity.server.as_str() != enrolled.server
        || identity.certificate.identity.site.as_str() != enrolled.site
    {
        return Err(failed(format!(
            "the certificate is for {}, the answer says server {} of site {}",
            identity.certificate.identity, enrolled.server, enrolled.site
        )));
    }
    Ok(Enrolled {
        identity,
        agents_urls: enrolled.agents_urls,
        publisher_keys: enrolled.publisher_keys,
    })
}

/// Trusts a server whose chain verifies against the CA certificate, among
/// those it sends, whose fingerprint the operator gave.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the controller's certificate chain holds no CA with fingerprint {}",
                    self.fingerprint
                ))
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
