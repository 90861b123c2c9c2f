//! The test process's certificate authority, made once per process with
//! `rcgen`. The harness puts it in each test controller's TLS folder as the
//! controller's own CA (so the controller loads it and issues its server
//! certificate from it, as in production), and everything that talks to a
//! test controller trusts it: [`http`], agents' `controller_ca`, simulated
//! agents, and test relays that stand in for a controller.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The CA, on disk for agents' configurations.
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
    pub pem: String,
    key_pem: String,
}

/// The process's test CA.
pub fn ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        flotilla_proto::tls::install_crypto_provider();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Flotilla test CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key).unwrap();
        sweep_old_cas();
        let dir = tempfile::Builder::new()
            .prefix("flotilla-test-ca-")
            .tempdir()
            .unwrap()
            .keep();
        let ca = TestCa {
            dir,
            pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(ca.file(), &ca.pem).unwrap();
        ca
    })
}

/// Each test process keeps its CA's folder for as long as it runs (a
/// static is never dropped); those of processes long gone are removed here,
/// so test runs do not fill the temporary folder.
fn sweep_old_cas() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|at| at < hour_ago);
        if old
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with("flotilla-test-ca-")
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl TestCa {
    /// The own CA of a controller whose TLS folder is `tls_dir` (`ca.pem`
    /// and `ca-key.pem`, which it makes at its first start): a load
    /// generator issues its simulated agents' certificates from it, as the
    /// controller does at enrollment.
    pub fn load(tls_dir: &Path) -> anyhow::Result<&'static TestCa> {
        let read = |name: &str| {
            let path = tls_dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
        };
        let ca = TestCa {
            dir: tls_dir.to_owned(),
            pem: read("ca.pem")?,
            key_pem: read("ca-key.pem")?,
        };
        KeyPair::from_pem(&ca.key_pem)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tls_dir.join("ca-key.pem").display()))?;
        Ok(Box::leak(Box::new(ca)))
    }

    /// `ca.pem`, for an agent's `controller_ca`.
    pub fn file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Makes it the own CA of a controller whose TLS folder is `tls_dir`
    /// (unless that folder already has one).
    pub fn seed(&self, tls_dir: &Path) {
        if tls_dir.join("ca.pem").exists() {
            return;
        }
        std::fs::create_dir_all(tls_dir).unwrap();
        std::fs::write(tls_dir.join("ca-key.pem"), &self.key_pem).unwrap();
        std::fs::write(tls_dir.join("ca.pem"), &self.pem).unwrap();
    }

    /// A TLS acceptor for `127.0.0.1` and `localhost`, with a certificate
    /// from this CA: a test server that agents trust like the controller.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let issuer =
            Issuer::from_ca_cert_pem(&self.pem, KeyPair::from_pem(&self.key_pem).unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let certificate = params.signed_by(&key, &issuer).unwrap();
        let chain = vec![
            certificate.der().clone(),
            CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap(),
        ];
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// A server certificate for 127.0.0.1 and localhost from this CA, and
    /// its key, PEM.
    pub fn server_certificate(&self) -> (String, String) {
        let issuer =
            Issuer::from_ca_cert_pem(&self.pem, KeyPair::from_pem(&self.key_pem).unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let certificate = params.signed_by(&key, &issuer).unwrap();
        (certificate.pem(), key.serialize_pem())
    }

    /// The gRPC client TLS that trusts test controllers, without a client
    /// certificate: what an agent that is not enrolled has.
    pub fn grpc(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.pem))
    }

    /// The gRPC client TLS of an agent enrolled as `server` of `site`.
    pub fn grpc_as(&self, site: &str, server: &str) -> tonic::transport::ClientTlsConfig {
        let (certificate, key) = self.agent_certificate(site, server);
        self.grpc()
            .identity(tonic::transport::Identity::from_pem(certificate, key))
    }

    /// A certificate from this CA for `server` of `site` (and its key, PEM),
    /// valid for a day, as a test controller would issue at enrollment. One
    /// per identity in this process.
    pub fn agent_certificate(&self, site: &str, server: &str) -> (String, String) {
        static ISSUED: OnceLock<
            std::sync::Mutex<std::collections::HashMap<String, (String, String)>>,
        > = OnceLock::new();
        let issued = ISSUED.get_or_init(Default::default);
        let key = format!("{site}:{server}");
        if let Some(found) = issued.lock().unwrap().get(&key) {
            return found.clone();
        }
        let now = time::OffsetDateTime::now_utc();
        let made = self.agent_certificate_valid(
            site,
            server,
            now - time::Duration::minutes(5),
            now + time::Duration::days(1),
        );
        issued.lock().unwrap().insert(key, made.clone());
        made
    }

    /// A certificate for `server` of `site` valid between the two times
    /// (an expired one, say), with its key, PEM.
    pub fn agent_certificate_valid(
        &self,
        site: &str,
        server: &str,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> (String, String) {
        let issuer =
            Issuer::from_ca_cert_pem(&self.pem, KeyPair::from_pem(&self.key_pem).unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let identity = flotilla_proto::tls::AgentIdentity {
            site: flotilla_proto::domain::SiteName::parse(site).unwrap(),
            server: flotilla_proto::domain::ServerId::parse(server).unwrap(),
        };
        params.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(identity.uri()).unwrap(),
        )];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        let mut serial = flotilla_proto::web::random_bytes::<16>();
        serial[0] = (serial[0] & 0x7f) | 0x40;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let certificate = params.signed_by(&key, &issuer).unwrap();
        (
            format!("{}{}", certificate.pem(), self.pem),
            key.serialize_pem(),
        )
    }

    /// Writes the identity of an enrolled agent into its data folder, as
    /// `flotilla-agent enroll` would.
    pub fn enroll_on_disk(&self, data: &Path, site: &str, server: &str) {
        let (certificate, key) = self.agent_certificate(site, server);
        let dir = data.join("identity");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("agent.pem"), format!("{certificate}{key}")).unwrap();
        std::fs::write(dir.join("controller-ca.pem"), &self.pem).unwrap();
    }
}

/// The admin API token every test controller registers at start
/// (`--admin-token-file`), which [`http`] sends.
pub fn admin_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let token = flotilla_proto::web::random_secret();
        std::fs::write(ca().dir.join("admin-token"), &token).unwrap();
        token
    })
}

/// The file holding [`admin_token`].
pub fn admin_token_file() -> PathBuf {
    admin_token();
    ca().dir.join("admin-token")
}

/// The test CA's file as a command-line argument (`release publish --ca`).
pub fn ca_file() -> String {
    ca().file().display().to_string()
}

/// A gRPC channel to a test controller, as an agent enrolled as `server`
/// of `site` opens it.
pub async fn grpc_channel(url: &str, site: &str, server: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .tls_config(ca().grpc_as(site, server))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// An HTTP client that trusts test controllers and calls them with the
/// admin token unless a request says otherwise (it also speaks plain HTTP
/// to agents' portals).
pub fn http() -> reqwest::Client {
    let ca = ca();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", admin_token()).parse().unwrap(),
    );
    reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.pem.as_bytes()).unwrap())
        .default_headers(headers)
        .build()
        .unwrap()
}

/// A bare TLS connection to a test controller's dashboard at `url`
/// (`https://127.0.0.1:port`), HTTP/1.1 only, from the loopback address
/// `from` (127.0.0.1, or another of 127/8 to stand for another source): to
/// send requests byte by byte, as a slow or hostile client does.
pub async fn raw_https(
    url: &str,
    from: std::net::Ipv4Addr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let address = url.trim_start_matches("https://").trim_end_matches('/');
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca().pem.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((from, 0).into())?;
    let address = address
        .parse()
        .map_err(|e| std::io::Error::other(format!("{address}: {e}")))?;
    let tcp = socket.connect(address).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await
}

/// An HTTP client that trusts test controllers and sends no credentials.
pub fn anonymous() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca().pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// A browser-style session: what `POST /api/v1/session` gives a person who
/// signs in with a password.
#[derive(Debug, Clone)]
pub struct Session {
    /// `name=value`, as a browser sends it back.
    pub cookie: String,
    /// The whole `Set-Cookie` header, with its attributes.
    pub set_cookie: String,
    pub csrf: String,
}

impl Session {
    /// Signs `name` in at `base` with `password` through `client`.
    pub async fn sign_in(client: &reqwest::Client, base: &str, name: &str, password: &str) -> Self {
        let response = client
            .post(format!("{base}/api/v1/session"))
            .json(&serde_json::json!({"name": name, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "signing {name} in");
        let set_cookie = response.headers()[reqwest::header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_owned();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let body: serde_json::Value = response.json().await.unwrap();
        let csrf = body["csrf"].as_str().unwrap().to_owned();
        Session {
            cookie,
            set_cookie,
            csrf,
        }
    }

    /// The headers a browser page sends with every change: the cookie and
    /// the CSRF token.
    pub fn headers(&self) -> reqwest::header::HeaderMap {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::COOKIE, self.cookie.parse().unwrap());
        headers.insert("x-csrf-token", self.csrf.parse().unwrap());
        headers
    }
}
