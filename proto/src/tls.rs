//! What both sides need of TLS: the one crypto provider (rustls with ring),
//! reading PEM certificates with a clear error, and certificate fingerprints
//! as operators compare them (`sha256:` and the hex of the DER).

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_fingerprint_is_the_sha256_of_the_der() {
        let der = CertificateDer::from(vec![1u8, 2, 3]);
        assert_eq!(
            fingerprint(&der),
            "sha256:039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81"
        );
    }
}
