//! The `serve` command's TLS arguments: the controller's own CA by
//! default, or the operator's certificate; the names it answers to; agents'
//! certificate lifetime. Part of the binary, beside `main.rs`.

use std::path::PathBuf;

use clap::Args;
use flotilla_controller::db::Location;
use flotilla_controller::tls;

use crate::beside_database;

/// TLS: the controller's own CA by default, or the operator's certificate.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Where the controller keeps its own certificate authority (ca.pem,
    /// ca-key.pem), created at first start; defaults to a `tls` folder
    /// beside the database.
    #[arg(long, env = "FLOTILLA_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// The names and addresses agents and browsers reach this controller by,
    /// for its certificate and the host names it answers to (repeatable);
    /// defaults to localhost, 127.0.0.1, ::1 and this machine's host name.
    #[arg(long = "tls-name", env = "FLOTILLA_TLS_NAMES", value_delimiter = ',')]
    tls_names: Vec<String>,
    /// The operator's server certificate, then its chain, as PEM; with
    /// --tls-key, used instead of the controller's own CA.
    #[arg(long, env = "FLOTILLA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, as PEM.
    #[arg(long, env = "FLOTILLA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve agents, the dashboard and the API in plain text. Anyone on the
    /// network can then read and change what they say: for a lab only.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_dir"])]
    insecure_plaintext: bool,
    /// How long an agent's certificate is valid: a number and a unit, s, m,
    /// h or d (`30d`). Agents renew theirs when a third of it is left.
    #[arg(long, env = "FLOTILLA_AGENT_CERTIFICATE_LIFETIME", default_value = "30d", value_parser = parse_lifetime)]
    pub agent_certificate_lifetime: std::time::Duration,
}

/// `90s`, `15m`, `12h`, `30d`.
fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    let unit = text.chars().last().unwrap_or(' ');
    let seconds: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("\"{text}\": a number then s, m, h or d, like 30d")),
    };
    let number: u64 = text[..text.len() - 1]
        .parse()
        .map_err(|_| format!("\"{text}\": a number then s, m, h or d, like 30d"))?;
    match number.checked_mul(seconds) {
        Some(total) if (10..=3650 * 86_400).contains(&total) => {
            Ok(std::time::Duration::from_secs(total))
        }
        _ => Err(format!("\"{text}\": from 10 seconds to 3650 days")),
    }
}

impl TlsArgs {
    /// The names and addresses agents and browsers reach this controller by.
    pub fn names(&self) -> Vec<String> {
        if !self.tls_names.is_empty() {
            return self.tls_names.clone();
        }
        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        if let Some(host) = gethostname().filter(|h| !names.contains(h)) {
            names.push(host);
        }
        names
    }

    /// The identity to serve and the CA of agents' certificates, or `None`
    /// in plain text.
    pub fn identity(
        &self,
        db: &Location,
    ) -> anyhow::Result<Option<(tls::Identity, std::sync::Arc<tls::AgentCa>)>> {
        if self.insecure_plaintext {
            return Ok(None);
        }
        let dir = match &self.tls_dir {
            Some(dir) => dir.clone(),
            None => beside_database(db, "tls", "--tls-dir")?,
        };
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => tls::Identity::from_files(cert, key)?,
            _ => tls::Identity::own(&dir, &self.names())?,
        };
        Ok(Some((
            identity,
            std::sync::Arc::new(tls::AgentCa::own(&dir)?),
        )))
    }
}

/// This machine's host name, when it can be a certificate's DNS name.
pub fn gethostname() -> Option<String> {
    let host = gethostname::gethostname().to_string_lossy().to_lowercase();
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then_some(host)
}
