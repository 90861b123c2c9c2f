//! A real PostgreSQL server for a test: `initdb` in a temporary folder, the
//! server on a free loopback port, stopped when dropped. As root, it runs as
//! the `postgres` user (PostgreSQL refuses to run as root).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server; `url` reaches its `postgres` database as superuser
/// `flotilla` (trust authentication on loopback).
#[derive(Debug)]
pub struct Postgres {
    _dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
    pub bin: PathBuf,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `program` as the `postgres` user when root, else as is.
fn as_postgres(program: &std::path::Path) -> Command {
    if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The newest `/usr/lib/postgresql/*/bin`.
pub fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql (apt-get install postgresql)")
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    found.sort();
    found
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(false)
    }

    /// A server that also takes TLS connections, with a certificate for
    /// 127.0.0.1 from the test CA ([`crate::tls::ca`]).
    pub fn start_tls() -> Postgres {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let mut ssl_args: Vec<String> = Vec::new();
        if tls {
            let (certificate, key) = crate::tls::ca().server_certificate();
            let (cert_file, key_file) =
                (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::write(&cert_file, certificate).unwrap();
            std::fs::write(&key_file, key).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
                    .unwrap();
            }
            ssl_args = vec![
                "-c".into(),
                "ssl=on".into(),
                "-c".into(),
                format!("ssl_cert_file={}", cert_file.display()),
                "-c".into(),
                format!("ssl_key_file={}", key_file.display()),
            ];
        }
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let data = dir.path().join("data");
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "flotilla",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = as_postgres(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(&ssl_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("postgres.log")).unwrap())
            .spawn()
            .unwrap();
        let server = Postgres {
            _dir: dir,
            child,
            port,
            bin,
        };
        let started = Instant::now();
        loop {
            let ready = Command::new(server.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "flotilla"])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            if ready.success() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "PostgreSQL did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// `postgres://flotilla@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://flotilla@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database; returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "flotilla",
                name,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(name)
    }

    /// Runs SQL with `psql`; returns its output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "flotilla",
            ])
            .args([
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-q",
                "-At",
                "-d",
                database,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// The variable that runs the end-to-end tests' controllers on PostgreSQL:
/// a server's URL without a database (`postgres://flotilla@127.0.0.1:5432`),
/// reached by `createdb` as that user. `.ci/postgres` starts one.
pub const CONTROLLER_POSTGRES: &str = "FLOTILLA_TEST_CONTROLLER_POSTGRES";

/// When [`CONTROLLER_POSTGRES`] is set, the URL of the database of the
/// controller whose folder is `dir`: made at its first start, the same at
/// each restart (its name is kept in the folder).
pub fn controller_database(dir: &std::path::Path) -> Option<String> {
    let server = std::env::var(CONTROLLER_POSTGRES).ok()?;
    let server = server.trim_end_matches('/');
    let kept = dir.join("controller.postgres");
    if let Ok(name) = std::fs::read_to_string(&kept) {
        return Some(format!("{server}/{}", name.trim()));
    }
    static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "controller_{}_{}",
        std::process::id(),
        MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let (user, address) = server
        .trim_start_matches("postgres://")
        .split_once('@')
        .expect("FLOTILLA_TEST_CONTROLLER_POSTGRES is postgres://user@host:port");
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "5432"));
    let out = Command::new(bin_dir().join("createdb"))
        .args(["-h", host, "-p", port, "-U", user, &name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "createdb {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&kept, &name).unwrap();
    Some(format!("{server}/{name}"))
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A fast shutdown: the server ends its sessions and stops.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
