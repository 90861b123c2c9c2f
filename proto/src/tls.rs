//! What both sides need of TLS: the one crypto provider (rustls with ring),
//! reading PEM certificates with a clear error, and certificate fingerprints
//! as operators compare them (`sha256:` and the hex of the DER), and an
//! agent's identity as its certificate states it.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use crate::domain::{ServerId, SiteName};

/// Installs rustls' ring provider as the process default, once; every
/// binary calls it before its first TLS connection (reqwest needs it).
pub fn install_crypto_provider() {
    // Err means a provider is installed already: the same one.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate file that cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read the certificate file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("the certificate file {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    Empty { path: PathBuf },
}

/// Writes a PEM file (a certificate, or a key when `secret`: readable by
/// its owner only) through a temporary file and a rename, so that a reader
/// never sees half of it; creates its folder. The temporary file has a
/// random name and is created new: a file or link someone left in its place
/// is never written through, nor its permissions kept.
pub fn write_pem_file(path: &Path, contents: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let random = &crate::web::random_secret()[..16];
    let temporary = path.with_file_name(format!(".{name}.{random}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    // On Windows, closed to other users before anything is in it.
    #[cfg(not(unix))]
    if secret && let Err(e) = crate::acl::restrict(&temporary) {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    let written = file
        .write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// The certificates of a PEM file, in order.
pub fn read_certificates(path: &Path) -> Result<(String, Vec<CertificateDer<'static>>), PemError> {
    let read = |message: String| PemError::Read {
        path: path.to_path_buf(),
        message,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certificates.is_empty() {
        return Err(PemError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok((pem, certificates))
}

/// `sha256:` and the lowercase hex of the certificate's DER: what an
/// operator compares with what the controller printed.
pub fn fingerprint(certificate: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(certificate.as_ref());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The prefix of the URI (subject alternative name) that states an agent's
/// site and server id in its certificate: `urn:flotilla:agent:<site>:<server>`.
pub const AGENT_URI_PREFIX: &str = "urn:flotilla:agent:";

/// Which server of which site an agent is: what the controller reads from
/// the agent's certificate, never from what the agent says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub site: SiteName,
    pub server: ServerId,
}

impl AgentIdentity {
    /// The URI a certificate carries for this identity.
    pub fn uri(&self) -> String {
        format!("{AGENT_URI_PREFIX}{}:{}", self.site, self.server)
    }

    /// Reads an identity from its URI.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let (site, server) = uri.strip_prefix(AGENT_URI_PREFIX)?.split_once(':')?;
        Some(AgentIdentity {
            site: SiteName::parse(site).ok()?,
            server: ServerId::parse(server).ok()?,
        })
    }
}

impl std::fmt::Display for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server {} of site {}", self.server, self.site)
    }
}

/// What matters of an agent's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCertificate {
    pub identity: AgentIdentity,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// The end of its validity, in Unix seconds.
    pub not_after: i64,
    /// The start of its validity, in Unix seconds.
    pub not_before: i64,
}

impl AgentCertificate {
    /// Reads an agent certificate (DER). Says what is wrong with one that is
    /// not an agent's.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let (_, certificate) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not a readable certificate: {e}"))?;
        let names = certificate
            .subject_alternative_name()
            .map_err(|e| format!("unreadable subject alternative names: {e}"))?;
        let identity = names
            .iter()
            .flat_map(|names| names.value.general_names.iter())
            .find_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => AgentIdentity::from_uri(uri),
                _ => None,
            })
            .ok_or_else(|| {
                format!(
                    "the certificate states no agent identity ({AGENT_URI_PREFIX}<site>:<server>)"
                )
            })?;
        let serial: String = certificate
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let validity = certificate.validity();
        Ok(AgentCertificate {
            identity,
            serial,
            not_after: validity.not_after.timestamp(),
            not_before: validity.not_before.timestamp(),
        })
    }

    /// Reads the first certificate of a PEM text.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let der = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .ok_or("no PEM certificate")?
            .map_err(|e| e.to_string())?;
        Self::parse(der.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link left where the old code put its temporary file (`key.tmp`)
    /// is not written through, and the key is owner-only.
    #[cfg(unix)]
    #[test]
    fn a_key_is_written_through_a_new_file_of_its_own() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").expect("victim");
        let key = dir.path().join("key.pem");
        std::os::unix::fs::symlink(&victim, key.with_extension("tmp")).expect("link");
        write_pem_file(&key, "SECRET", true).expect("written");
        assert_eq!(
            std::fs::read_to_string(&victim).ok().as_deref(),
            Some("keep me")
        );
        assert_eq!(
            std::fs::read_to_string(&key).ok().as_deref(),
            Some("SECRET")
        );
        let mode = std::fs::metadata(&key).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(left.len(), 3, "no temporary file left: {left:?}");
    }

    #[test]
    fn a_file_without_a_certificate_is_named() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap_or_else(|e| panic!("{e}"));
        let error = read_certificates(&path).err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some(
                format!(
                    "the certificate file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                )
                .as_str()
            )
        );
        let missing = read_certificates(&dir.path().join("missing.pem"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(missing.contains("missing.pem"), "{missing}");
    }

    #[test]
    fn an_identity_round_trips_through_its_uri_and_nothing_else_parses() {
        let identity = AgentIdentity {
            site: SiteName::parse("acme-paris").unwrap_or_else(|e| panic!("{e}")),
            server: ServerId::parse("acme-web-01.corp").unwrap_or_else(|e| panic!("{e}")),
        };
        assert_eq!(
            identity.uri(),
            "urn:flotilla:agent:acme-paris:acme-web-01.corp"
        );
        assert_eq!(AgentIdentity::from_uri(&identity.uri()), Some(identity));
        for bad in [
            "urn:flotilla:agent:acme-paris",
            "urn:flotilla:agent::web",
            "urn:flotilla:agent:acme:web:extra",
            "urn:flotilla:agent:acme/../x:web",
            "https://acme:web",
        ] {
            assert_eq!(AgentIdentity::from_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_fingerprint_is_the_sha256_of_the_der() {
        let der = CertificateDer::from(vec![1u8, 2, 3]);
        assert_eq!(
            fingerprint(&der),
            "sha256:039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81"
        );
    }
}
