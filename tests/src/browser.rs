//! A real headless Chromium, driven through ChromeDriver's WebDriver HTTP
//! protocol (Debian's `chromium` and `chromium-driver`, which `.ci/run`
//! installs). Enough of WebDriver to load a page and evaluate scripts in it.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A browser session.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    session: String,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver on an ephemeral port and opens a headless session.
    pub async fn start() -> Browser {
        // ChromeDriver sometimes exits at start when several start at once
        // on a loaded machine: started again, at most three times, saying why.
        let mut attempt = 0;
        let (driver, mut lines, port) = loop {
            attempt += 1;
            let mut driver = Command::new("chromedriver")
                .arg("--port=0")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("chromedriver not found: install Debian's chromium and chromium-driver (.ci/run does)");
            let mut lines = BufReader::new(driver.stdout.take().expect("stdout")).lines();
            let mut port = None;
            while let Some(line) = lines.next_line().await.expect("read chromedriver output") {
                if let Some((_, rest)) = line.split_once("started successfully on port ") {
                    port = Some(rest.trim_end_matches('.').trim().to_owned());
                    break;
                }
            }
            if let Some(port) = port {
                // Read and dropped, so that it never blocks on a full pipe.
                if let Some(mut stderr) = driver.stderr.take() {
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
                    });
                }
                break (driver, lines, port);
            }
            let output = driver.wait_with_output().await.expect("chromedriver's end");
            let why = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(
                attempt < 3,
                "chromedriver exited before it started, three times ({}): {why}",
                output.status
            );
            eprintln!(
                "chromedriver exited before it started ({}): {why}; starting it again",
                output.status
            );
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("profile dir");
        let binary = std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let http = crate::http();
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                // Test controllers' certificates come from the test process's own CA.
                "acceptInsecureCerts": true,
                "goog:chromeOptions": {
                    "binary": binary,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }
            }}}))
            .send()
            .await
            .expect("create a WebDriver session")
            .json()
            .await
            .expect("WebDriver session JSON");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        Browser {
            driver,
            session,
            base,
            http,
            _profile: profile,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    /// Navigates to `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        let response: Value = self
            .http
            .post(self.url("/url"))
            .json(&json!({ "url": url }))
            .send()
            .await
            .expect("navigate")
            .json()
            .await
            .expect("navigate JSON");
        assert!(
            response["value"].is_null(),
            "navigation to {url} failed: {response}"
        );
    }

    /// Evaluates `script` (a function body; `return` a value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        let response: Value = self
            .http
            .post(self.url("/execute/sync"))
            .json(&json!({ "script": script, "args": [] }))
            .send()
            .await
            .expect("execute script")
            .json()
            .await
            .expect("script JSON");
        response["value"].clone()
    }

    /// Waits for an element matching the CSS `selector` (`what` it shows,
    /// for the failure message) and returns its text.
    pub async fn text_of(&self, what: &str, selector: &str) -> String {
        let script = format!(
            "const e = document.querySelector({selector:?}); return e ? e.textContent : null"
        );
        crate::wait_until(what, async || {
            let text = self.eval(&script).await;
            text.as_str().map(str::to_owned).ok_or(text.to_string())
        })
        .await
    }

    /// Signs in on the controller's sign-in page as its first admin, as a
    /// person would, and waits for the page that follows.
    pub async fn sign_in(&self, controller: &crate::Controller) {
        self.sign_in_at(controller, "/login").await;
    }

    /// Signs in as the first admin on the sign-in page at `login` (a path
    /// with its query, such as `/login?next=…`), and waits for the page
    /// that follows.
    pub async fn sign_in_at(&self, controller: &crate::Controller, login: &str) {
        let password = controller
            .admin_password
            .clone()
            .expect("the controller's first start printed the admin password");
        self.goto(&format!("{}{login}", controller.http_url)).await;
        let script = format!(
            "document.getElementById('name').value = 'admin'; \
             document.getElementById('password').value = {password:?}; \
             document.getElementById('sign-in').requestSubmit(); return true;"
        );
        self.eval(&script).await;
        crate::wait_until("the page after signing in", async || {
            let path = self.eval("return location.pathname").await;
            match path.as_str() {
                Some(path) if path != "/login" => Ok(()),
                _ => Err(format!(
                    "{path}: {}",
                    self.eval(
                        "const p = document.getElementById('problem'); return p && p.textContent"
                    )
                    .await
                )),
            }
        })
        .await;
    }

    /// Ends the session and the browser.
    pub async fn quit(mut self) {
        let _ = self.http.delete(self.url("")).send().await;
        let _ = self.driver.kill().await;
    }

    /// Saves what the pages download (a link to a file, such as the audit
    /// trail's export) in `dir`; headless Chromium refuses downloads
    /// otherwise. Through ChromeDriver's Chrome DevTools command.
    pub async fn save_downloads_in(&self, dir: &std::path::Path) {
        let response: Value = self
            .http
            .post(self.url("/goog/cdp/execute"))
            .json(&json!({
                "cmd": "Browser.setDownloadBehavior",
                "params": {"behavior": "allow", "downloadPath": dir.display().to_string()}
            }))
            .send()
            .await
            .expect("set the download behaviour")
            .json()
            .await
            .expect("download behaviour JSON");
        assert!(
            response
                .get("value")
                .is_some_and(|v| v.get("error").is_none()),
            "downloads not allowed: {response}"
        );
    }
}
