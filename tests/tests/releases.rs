//! Publishing releases: keys, packages and signatures made with the CLI,
//! uploads streamed to the controller, conflicts refused, downloads resumable.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use flotilla_proto::signing::{PublicKey, verify_package};
use flotilla_tests::{Controller, ca_file, event_texts, module};
use serde_json::{Value, json};

/// Runs `flotilla-controller <args>`; returns success and everything printed.
use flotilla_tests::controller_cli as cli;

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A module folder with a few files.
fn dist(dir: &Path, marker: &str) -> PathBuf {
    let dist = dir.join(format!("dist-{marker}"));
    std::fs::create_dir_all(dist.join("bin")).unwrap();
    std::fs::write(dist.join("index.html"), format!("<h1>{marker}</h1>")).unwrap();
    std::fs::write(dist.join("bin/shop.dll"), vec![7u8; 100_000]).unwrap();
    dist
}

#[tokio::test]
async fn packages_are_built_signed_and_published_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let key = dir.path().join("publisher");
    let (ok, out) = cli(&["keygen", "--out", s(&key)]).await;
    assert!(ok, "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key.with_extension("key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the secret key is the owner's only");
    }
    let public =
        PublicKey::from_hex(&std::fs::read_to_string(key.with_extension("pub")).unwrap()).unwrap();

    let package = dir.path().join("ecommerce-2.3.0.zip");
    let (ok, out) = cli(&[
        "package",
        "build",
        "--module",
        "ecommerce",
        "--version",
        "2.3.0",
        "--kind",
        "web",
        "--from",
        s(&dist(dir.path(), "a")),
        "--preserve",
        "web.config",
        "--out",
        s(&package),
        "--key",
        s(&key.with_extension("key")),
    ])
    .await;
    assert!(ok, "{out}");
    let notes = dir.path().join("notes.md");
    std::fs::write(&notes, "# 2026.11\n\n- faster checkout\n").unwrap();
    let (ok, out) = cli(&[
        "release",
        "publish",
        "--server",
        &controller.http_url,
        "--ca",
        &ca_file(),
        "--token",
        &controller.token_for("pipeline", "publisher").await,
        "--version",
        "2026.11",
        "--notes",
        s(&notes),
        s(&package),
    ])
    .await;
    assert!(ok && out.contains("release 2026.11 published"), "{out}");

    let (status, release) = controller.get("/api/v1/releases/2026.11").await;
    assert_eq!(status, 200);
    assert_eq!(release["notes"], "# 2026.11\n\n- faster checkout\n");
    let published = &release["packages"][0];
    assert_eq!(
        (published["module"].as_str(), published["version"].as_str()),
        (Some("ecommerce"), Some("2.3.0"))
    );
    let sha256 = std::fs::read_to_string(format!("{}.sha256", package.display())).unwrap();
    assert_eq!(published["sha256"], sha256.trim());
    assert_eq!(
        verify_package(
            std::slice::from_ref(&public),
            sha256.trim(),
            published["signature"].as_str().unwrap()
        ),
        Ok(public.id()),
        "the signature published verifies with the publisher's key"
    );
    let (_, list) = controller.get("/api/v1/releases").await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    // The same release again: nothing changes.
    let (ok, out) = cli(&[
        "release",
        "publish",
        "--server",
        &controller.http_url,
        "--ca",
        &ca_file(),
        "--token",
        &controller.token_for("pipeline", "publisher").await,
        "--version",
        "2026.11",
        "--notes",
        s(&notes),
        s(&package),
    ])
    .await;
    assert!(ok && out.contains("already published, unchanged"), "{out}");

    // Other bytes under the same module version: refused, whatever the release.
    let changed = dir.path().join("changed").join("ecommerce-2.3.0.zip");
    std::fs::create_dir_all(changed.parent().unwrap()).unwrap();
    let (ok, out) = cli(&[
        "package",
        "build",
        "--module",
        "ecommerce",
        "--version",
        "2.3.0",
        "--from",
        s(&dist(dir.path(), "b")),
        "--out",
        s(&changed),
        "--key",
        s(&key.with_extension("key")),
    ])
    .await;
    assert!(ok, "{out}");
    let (ok, out) = cli(&[
        "release",
        "publish",
        "--server",
        &controller.http_url,
        "--ca",
        &ca_file(),
        "--token",
        &controller.token_for("pipeline", "publisher").await,
        "--version",
        "2026.12",
        s(&changed),
    ])
    .await;
    assert!(!ok);
    assert!(
        out.contains("409") && out.contains("ecommerce 2.3.0 was already published with sha256"),
        "{out}"
    );
    let (_, list) = controller.get("/api/v1/releases").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "nothing was published");

    // An unsigned package is not published at all.
    let unsigned = dir.path().join("unsigned.zip");
    let (ok, _) = cli(&[
        "package",
        "build",
        "--module",
        "phygitalapi",
        "--version",
        "1.0.0",
        "--from",
        s(&dist(dir.path(), "c")),
        "--out",
        s(&unsigned),
    ])
    .await;
    assert!(ok);
    let (ok, out) = cli(&[
        "release",
        "publish",
        "--server",
        &controller.http_url,
        "--ca",
        &ca_file(),
        "--token",
        &controller.token_for("pipeline", "publisher").await,
        "--version",
        "2026.13",
        s(&unsigned),
    ])
    .await;
    assert!(!ok && out.contains("is not signed"), "{out}");
}

#[tokio::test]
async fn bad_uploads_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let client = flotilla_tests::http();
    let put = |sha: String, body: Vec<u8>| {
        let client = client.clone();
        let url = format!("{}/api/v1/packages/{sha}", controller.http_url);
        async move {
            let response = client.put(url).body(body).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = put("ab".repeat(32), b"some bytes".to_vec()).await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("not ababab"),
        "{body}"
    );

    let not_a_zip = b"not a zip at all".to_vec();
    let sha = sha_of(&not_a_zip);
    let (status, body) = put(sha.clone(), not_a_zip).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("is not a readable zip"),
        "{body}"
    );

    let (status, body) = put("xyz".into(), Vec::new()).await;
    assert_eq!(status, 400, "{body}");

    let stored: Vec<_> = std::fs::read_dir(dir.path().join("packages"))
        .unwrap()
        .collect();
    assert!(stored.is_empty(), "{stored:?}");

    let response = client
        .post(format!("{}/api/v1/releases", controller.http_url))
        .json(
            &json!({"version": "1.0", "packages": [{"sha256": sha, "signature": "0".repeat(128)}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("has not been uploaded"),
        "{body}"
    );
}

fn sha_of(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bytes");
    std::fs::write(&path, bytes).unwrap();
    flotilla_proto::package::sha256_file(&path).unwrap()
}

#[tokio::test]
async fn downloads_resume_with_range_and_honour_the_etag() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let package = dir.path().join("big.zip");
    let random: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    flotilla_proto::package::build::from_entries(
        &package,
        "module = \"ecommerce\"\nversion = \"9.0.0\"\nkind = \"web\"\n",
        &[("blob.bin", &random)],
    )
    .unwrap();
    let bytes = std::fs::read(&package).unwrap();
    let sha = sha_of(&bytes);
    let client = flotilla_tests::http();
    assert_eq!(controller.upload(&sha, &bytes).await, 201);
    assert_eq!(
        controller.upload(&sha, &bytes).await,
        200,
        "an identical upload is a no-op"
    );

    let url = format!("{}/api/v1/packages/{sha}/file", controller.http_url);
    // Packages go to connected agents (their connection's download token)
    // and signed-in operators, not to anyone who asks.
    for token in [None, Some("0".repeat(64))] {
        let mut anonymous = flotilla_tests::anonymous().get(&url);
        if let Some(token) = token {
            anonymous = anonymous.bearer_auth(token);
        }
        assert_eq!(anonymous.send().await.unwrap().status(), 401);
    }
    let etag = format!("\"{sha}\"");
    let cut = bytes.len() / 3;
    let first = client
        .get(&url)
        .header("range", format!("bytes=0-{}", cut - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 206);
    assert_eq!(first.headers()["etag"], etag.as_str());
    let mut received = first.bytes().await.unwrap().to_vec();
    assert_eq!(received.len(), cut);
    // The download was cut here; it resumes where it stopped.
    let rest = client
        .get(&url)
        .header("range", format!("bytes={}-", received.len()))
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status().as_u16(), 206);
    received.extend_from_slice(&rest.bytes().await.unwrap());
    assert_eq!(
        sha_of(&received),
        sha,
        "the resumed download is the package"
    );

    let stale = client
        .get(&url)
        .header("range", "bytes=10-")
        .header("if-range", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        stale.status().as_u16(),
        200,
        "a resume against other content gets the whole file"
    );
    assert_eq!(stale.bytes().await.unwrap().len(), bytes.len());
    let cached = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status().as_u16(), 304);
}

/// Lays out a web module `ecommerce` 1.0.0 (and `phygitalapi` 1.0.0) for an agent.
fn applications(dir: &Path, id: &str) -> String {
    let mut xml = String::from("<applications>\n");
    for module in ["ecommerce", "phygitalapi"] {
        let folder = dir.join(id).join("sites").join(module);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("version.txt"), "1.0.0\n").unwrap();
        xml.push_str(&format!(
            "<application name=\"{module}\" kind=\"web\" path=\"{}\"/>\n",
            folder.display()
        ));
    }
    xml + "</applications>\n"
}

#[tokio::test]
async fn a_release_reaches_connected_agents_at_once_and_offline_ones_when_they_return() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let key = dir.path().join("publisher");
    assert!(cli(&["keygen", "--out", s(&key)]).await.0);
    let stranger = dir.path().join("stranger");
    assert!(cli(&["keygen", "--out", s(&stranger)]).await.0);
    let trusted = format!(
        "trusted_keys = [\"{}\"]",
        std::fs::read_to_string(key.with_extension("pub"))
            .unwrap()
            .trim()
    );
    let agents = dir.path().join("agents");
    let web = flotilla_tests::Agent::launch_with(
        &agents,
        "acme",
        "web-01",
        &controller.grpc_url,
        &applications(&agents, "web-01"),
        100,
        &trusted,
    )
    .await;
    controller
        .wait_for_server("web-01", "online", |s| s["online"] == true)
        .await;

    let build = |module: &str, version: &str, signer: &Path| {
        let out = dir.path().join(format!("{module}-{version}.zip"));
        let args: Vec<String> = [
            "package",
            "build",
            "--module",
            module,
            "--version",
            version,
            "--from",
            s(&dist(dir.path(), &format!("{module}{version}"))),
            "--out",
            s(&out),
            "--key",
            s(&signer.with_extension("key")),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (ok, text) = cli(&args).await;
            assert!(ok, "{text}");
            out
        }
    };
    let good = build("ecommerce", "2.0.0", &key).await;
    let forged = build("phygitalapi", "2.0.0", &stranger).await;
    let notes = dir.path().join("notes.md");
    std::fs::write(&notes, "Faster checkout for everyone").unwrap();
    let (ok, out) = cli(&[
        "release",
        "publish",
        "--server",
        &controller.http_url,
        "--ca",
        &ca_file(),
        "--token",
        &controller.token_for("pipeline", "publisher").await,
        "--version",
        "2026.11",
        "--notes",
        s(&notes),
        s(&good),
        s(&forged),
    ])
    .await;
    assert!(ok, "{out}");

    // Pushed, downloaded, verified: the update waits on the server, and the
    // controller knows it.
    controller
        .wait_for_server("web-01", "ecommerce 2.0.0 pending", |s| {
            module(s, "ecommerce")["pending_version"] == "2.0.0"
        })
        .await;
    let page = web.portal().await;
    assert!(page.contains("action=\"/install/ecommerce\""), "{page}");
    assert!(
        page.contains("Faster checkout for everyone"),
        "the release notes on the portal: {page}"
    );
    // Staged ahead of time, beside the module: the install only swaps.
    let staged = agents.join("web-01/sites/.ecommerce.flotilla-staged-2.0.0");
    assert!(
        staged.join("index.html").is_file(),
        "{} is staged",
        staged.display()
    );
    let response = web
        .portal_http()
        .post(format!(
            "{}/api/modules/ecommerce/install",
            web.portal_base()
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let installed = controller
        .wait_for_server("web-01", "ecommerce 2.0.0 installed", |s| {
            module(s, "ecommerce")["installed_version"] == "2.0.0"
        })
        .await;
    let id = module(&installed, "ecommerce")["last_install"]["install_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, detail) = controller
        .get(&format!("/api/v1/servers/web-01/installs/{id}"))
        .await;
    let steps: Vec<&str> = event_texts(&detail);
    assert!(
        steps
            .iter()
            .any(|t| t.starts_with("using the new version staged ahead of time")),
        "{steps:?}"
    );
    assert!(
        !steps.iter().any(|t| t.starts_with("unpacked")),
        "nothing unpacked during the install: {steps:?}"
    );
    // The package signed by an unknown key was refused and is not there.
    let server = controller.server("web-01").await.unwrap();
    assert!(module(&server, "phygitalapi")["pending_version"].is_null());
    let packages: Vec<String> = std::fs::read_dir(web.data.join("bin/updates/packages"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !packages.iter().any(|p| p.starts_with("phygitalapi")),
        "{packages:?}"
    );
    // The dashboard's data says so, and why.
    let refused = controller
        .wait_for_server("web-01", "phygitalapi refused", |s| {
            module(s, "phygitalapi")["download"]["state"] == "refused"
        })
        .await;
    let detail = module(&refused, "phygitalapi")["download"]["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("does not match any trusted publisher key") && detail.contains("refused"),
        "{detail}"
    );
    flotilla_tests::wait_until("the refusal in the agent's log", async || {
        let log = web.log();
        log.contains("does not match any trusted publisher key")
            .then_some(())
            .ok_or(String::new())
    })
    .await;

    // A newer release that would go back in version is never pre-downloaded.
    let older = build("ecommerce", "0.9.0", &key).await;
    let (ok, out) = cli(&[
        "release",
        "publish",
        "--server",
        &controller.http_url,
        "--ca",
        &ca_file(),
        "--token",
        &controller.token_for("pipeline", "publisher").await,
        "--version",
        "2026.12",
        s(&older),
    ])
    .await;
    assert!(ok, "{out}");

    // An agent that was not connected gets everything when it connects.
    let late = flotilla_tests::Agent::launch_with(
        &agents,
        "acme",
        "web-02",
        &controller.grpc_url,
        &applications(&agents, "web-02"),
        100,
        &trusted,
    )
    .await;
    controller
        .wait_for_server("web-02", "ecommerce pending", |s| {
            s["online"] == true && !module(s, "ecommerce")["pending_version"].is_null()
        })
        .await;
    let server = controller.server("web-02").await.unwrap();
    assert_eq!(
        module(&server, "ecommerce")["pending_version"],
        "2.0.0",
        "the highest published version"
    );
    assert!(
        !late
            .data
            .join("bin/updates/packages/ecommerce-0.9.0.zip")
            .exists()
    );
    assert!(
        !web.data
            .join("bin/updates/packages/ecommerce-0.9.0.zip")
            .exists(),
        "no downgrade is fetched"
    );
}

/// A one-route HTTPS relay in front of the controller (its certificate from
/// the test CA, as the controller's) that cuts its first answer after
/// `cut_after` bytes, and records each request's `Range`.
async fn cutting_relay(
    upstream: String,
    cut_after: usize,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("https://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let acceptor = flotilla_tests::tls::ca().acceptor();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut client) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if client.read(&mut byte).await.unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let text = String::from_utf8_lossy(&head).into_owned();
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let range = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix("range: ")
                        .or_else(|| l.strip_prefix("Range: "))
                })
                .unwrap_or("")
                .to_owned();
            log.lock().unwrap().push(range.clone());
            let mut request = flotilla_tests::http().get(format!("{upstream}{path}"));
            if !range.is_empty() {
                request = request.header("range", range).header(
                    "if-range",
                    text.lines()
                        .find_map(|l| l.strip_prefix("if-range: "))
                        .unwrap_or(""),
                );
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let body = response.bytes().await.unwrap();
            let mut answer = format!(
                "HTTP/1.1 {} {}\r\ncontent-length: {}\r\nconnection: close\r\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
                body.len()
            )
            .into_bytes();
            answer.extend_from_slice(b"\r\n");
            answer.extend_from_slice(
                &body[..if first {
                    cut_after.min(body.len())
                } else {
                    body.len()
                }],
            );
            first = false;
            let _ = client.write_all(&answer).await;
            let _ = client.shutdown().await;
        }
    });
    (address, seen)
}

#[tokio::test]
async fn a_download_cut_half_way_resumes_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    // The relay listens on a port of its own on loopback: allowed as such.
    let controller =
        Controller::start_with_args(dir.path(), &["--package-host", "127.0.0.1:*"]).await;
    let key = dir.path().join("publisher");
    assert!(cli(&["keygen", "--out", s(&key)]).await.0);
    let trusted = format!(
        "trusted_keys = [\"{}\"]",
        std::fs::read_to_string(key.with_extension("pub"))
            .unwrap()
            .trim()
    );

    // A package big enough to cut, uploaded, then published by a URL that
    // goes through the cutting relay.
    let folder = dir.path().join("dist");
    std::fs::create_dir_all(&folder).unwrap();
    let noise: Vec<u8> = (0..2_000_000u64)
        .map(|i| {
            (i.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407)
                >> 33) as u8
        })
        .collect();
    std::fs::write(folder.join("blob.bin"), &noise).unwrap();
    let package = dir.path().join("ecommerce-2.0.0.zip");
    let (ok, out) = cli(&[
        "package",
        "build",
        "--module",
        "ecommerce",
        "--version",
        "2.0.0",
        "--from",
        s(&folder),
        "--out",
        s(&package),
        "--key",
        s(&key.with_extension("key")),
    ])
    .await;
    assert!(ok, "{out}");
    let bytes = std::fs::read(&package).unwrap();
    let sha = sha_of(&bytes);
    let client = flotilla_tests::http();
    assert_eq!(controller.upload(&sha, &bytes).await, 201);
    let (relay, ranges) = cutting_relay(controller.http_url.clone(), bytes.len() / 2).await;
    let signature = std::fs::read_to_string(format!("{}.sig", package.display())).unwrap();
    let published = client
        .post(format!("{}/api/v1/releases", controller.http_url))
        .json(&json!({"version": "2026.11", "packages": [{
            "sha256": sha, "signature": signature.trim(), "url": format!("{relay}/api/v1/packages/{sha}/file"),
            "module": "ecommerce", "version": "2.0.0", "kind": "web", "size": bytes.len()
        }]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        published.status().as_u16(),
        201,
        "{}",
        published.text().await.unwrap()
    );

    let agents = dir.path().join("agents");
    let _web = flotilla_tests::Agent::launch_with(
        &agents,
        "acme",
        "web-01",
        &controller.grpc_url,
        &applications(&agents, "web-01"),
        100,
        &trusted,
    )
    .await;
    controller
        .wait_for_server("web-01", "ecommerce 2.0.0 pending", |s| {
            module(s, "ecommerce")["pending_version"] == "2.0.0"
        })
        .await;
    let ranges = ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 2, "one cut, one resume: {ranges:?}");
    assert_eq!(ranges[0], "", "the first request asks for everything");
    assert_eq!(
        ranges[1],
        format!("bytes={}-", bytes.len() / 2),
        "the second resumes where the cut left off"
    );
}

#[tokio::test]
async fn a_download_survives_a_controller_restart() {
    let dir = tempfile::tempdir().unwrap();
    let controller_dir = dir.path().join("controller");
    std::fs::create_dir_all(&controller_dir).unwrap();
    let mut controller = Controller::start(&controller_dir).await;
    let key = flotilla_proto::signing::SecretKey::generate().unwrap();
    let trusted = format!(
        "trusted_keys = [\"{}\"]\ndownload_limit_kbps = 8000",
        key.public().to_hex()
    );
    // Bigger than what the loopback's socket buffers hold, so killing the
    // controller really cuts the transfer.
    let (bytes, sha) = upload_noise_package(&controller, dir.path(), 16_000_000).await;
    let client = flotilla_tests::http();

    let agents = dir.path().join("agents");
    let web = flotilla_tests::Agent::launch_with(
        &agents,
        "acme",
        "web-01",
        &controller.grpc_url,
        &applications(&agents, "web-01"),
        100,
        &trusted,
    )
    .await;
    controller
        .wait_for_server("web-01", "online", |s| s["online"] == true)
        .await;
    let published = client
        .post(format!("{}/api/v1/releases", controller.http_url))
        .json(&json!({"version": "1.0", "packages": [{"sha256": sha, "signature": key.sign_package(&sha)}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 201);

    // Part of it arrives at 8 MB/s, then the controller goes away.
    let part = web.data.join(format!("bin/updates/downloads/{sha}.part"));
    flotilla_tests::wait_until("a first part of the download", async || {
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        (have > 1_000_000)
            .then_some(())
            .ok_or(format!("{have} bytes; agent log:\n{}", web.log()))
    })
    .await;
    let (grpc, http) = (controller.grpc_addr(), controller.http_addr());
    controller.kill().await;
    let controller = Controller::start_on(&controller_dir, &grpc, &http).await;

    controller
        .wait_for_server("web-01", "ecommerce 2.0.0 pending", |s| {
            module(s, "ecommerce")["pending_version"] == "2.0.0"
        })
        .await;
    let log = web.log();
    let resumed = log
        .lines()
        .find_map(|l| l.split("resuming the download at byte ").nth(1))
        .and_then(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no resume in the log:\n{log}"));
    assert!(
        resumed > 0 && resumed < bytes.len() as u64,
        "resumed at {resumed}"
    );
    let filed = web.data.join("bin/updates/packages/ecommerce-2.0.0.zip");
    assert_eq!(
        sha_of(&std::fs::read(filed).unwrap()),
        sha,
        "the resumed download is the package"
    );
}

/// Incompressible bytes (xorshift), so a package is as big as its content.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test]
async fn tampered_bytes_are_refused_and_nothing_is_staged() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let key = flotilla_proto::signing::SecretKey::generate().unwrap();
    let trusted = format!("trusted_keys = [\"{}\"]", key.public().to_hex());
    // The bytes served are not the bytes that were signed and published.
    let real = dir.path().join("real.zip");
    flotilla_proto::package::build::from_entries(
        &real,
        "module = \"ecommerce\"\nversion = \"2.0.0\"\nkind = \"web\"\n",
        &[("index.html", b"real")],
    )
    .unwrap();
    let tampered = dir.path().join("tampered.zip");
    flotilla_proto::package::build::from_entries(
        &tampered,
        "module = \"ecommerce\"\nversion = \"2.0.0\"\nkind = \"web\"\n",
        &[("index.html", b"evil")],
    )
    .unwrap();
    let (real_sha, tampered_bytes) = (
        sha_of(&std::fs::read(&real).unwrap()),
        std::fs::read(&tampered).unwrap(),
    );
    let tampered_sha = sha_of(&tampered_bytes);
    let client = flotilla_tests::http();
    let uploaded = client
        .put(format!(
            "{}/api/v1/packages/{tampered_sha}",
            controller.http_url
        ))
        .body(tampered_bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status().as_u16(), 201);
    let published = client
        .post(format!("{}/api/v1/releases", controller.http_url))
        .json(&json!({"version": "1.0", "packages": [{
            "sha256": real_sha, "signature": key.sign_package(&real_sha),
            "url": format!("{}/api/v1/packages/{tampered_sha}/file", controller.http_url),
            "module": "ecommerce", "version": "2.0.0", "kind": "web"
        }]}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 201);

    let agents = dir.path().join("agents");
    let web = flotilla_tests::Agent::launch_with(
        &agents,
        "acme",
        "web-01",
        &controller.grpc_url,
        &applications(&agents, "web-01"),
        100,
        &trusted,
    )
    .await;
    let refused = controller
        .wait_for_server("web-01", "the package refused", |s| {
            module(s, "ecommerce")["download"]["state"] == "refused"
        })
        .await;
    let detail = module(&refused, "ecommerce")["download"]["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains(&format!(
            "have sha256 {tampered_sha}, not the published {real_sha}"
        )),
        "{detail}"
    );
    assert!(module(&refused, "ecommerce")["pending_version"].is_null());
    assert!(
        !agents
            .join("web-01/sites/.ecommerce.flotilla-staged-2.0.0")
            .exists(),
        "nothing staged"
    );
    assert!(
        !web.data
            .join("bin/updates/packages/ecommerce-2.0.0.zip")
            .exists(),
        "nothing filed"
    );
    assert_eq!(
        std::fs::read_to_string(agents.join("web-01/sites/ecommerce/version.txt")).unwrap(),
        "1.0.0\n",
        "nothing installed"
    );
}

#[tokio::test]
async fn a_download_survives_an_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let key = flotilla_proto::signing::SecretKey::generate().unwrap();
    let trusted = format!(
        "trusted_keys = [\"{}\"]\ndownload_limit_kbps = 4000",
        key.public().to_hex()
    );
    let (_, sha) = upload_noise_package(&controller, dir.path(), 8_000_000).await;
    let client = flotilla_tests::http();
    let published = client
        .post(format!("{}/api/v1/releases", controller.http_url))
        .json(&json!({"version": "1.0", "packages": [{"sha256": sha, "signature": key.sign_package(&sha)}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 201);

    let agents = dir.path().join("agents");
    let mut web = flotilla_tests::Agent::launch_with(
        &agents,
        "acme",
        "web-01",
        &controller.grpc_url,
        &applications(&agents, "web-01"),
        100,
        &trusted,
    )
    .await;
    let part = web.data.join(format!("bin/updates/downloads/{sha}.part"));
    flotilla_tests::wait_until("a first part of the download", async || {
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        (have > 1_000_000).then_some(()).ok_or(have.to_string())
    })
    .await;
    // The agent dies mid-download and comes back.
    web.relaunch("flotilla-agent", &[]).await;
    controller
        .wait_for_server("web-01", "ecommerce 2.0.0 pending", |s| {
            module(s, "ecommerce")["pending_version"] == "2.0.0"
        })
        .await;
    let log = web.log();
    assert!(log.contains("resuming the download at byte "), "{log}");
    let filed = web.data.join("bin/updates/packages/ecommerce-2.0.0.zip");
    assert_eq!(sha_of(&std::fs::read(filed).unwrap()), sha);
}

#[tokio::test]
async fn a_script_that_would_break_the_all_or_nothing_upgrade_is_refused_at_build() {
    let dir = tempfile::tempdir().unwrap();
    for (name, sql, said) in [
        (
            "002_orders.sql",
            "-- orders\nCREATE TABLE orders (id int);\nCOMMIT;\nCREATE INDEX o ON orders (id);\n",
            "002_orders.sql, line 3: COMMIT ends or starts a transaction itself",
        ),
        (
            "003_indexes.sql",
            "-- flotilla: no-transaction\nCREATE INDEX CONCURRENTLY a ON t (a);\n\nCREATE INDEX CONCURRENTLY b ON t (b);\n",
            "003_indexes.sql, line 4: a `-- flotilla: no-transaction` script runs one statement, and this is its second of 2",
        ),
    ] {
        let scripts = dir.path().join(format!("scripts-{name}"));
        std::fs::create_dir_all(&scripts).unwrap();
        // A good script first, and one whose COMMIT is in a function body.
        std::fs::write(scripts.join("001_create.sql"), "CREATE TABLE t (a INT);\nCREATE FUNCTION f() RETURNS void AS $$ BEGIN COMMIT; END $$ LANGUAGE plpgsql;\n").unwrap();
        std::fs::write(scripts.join(name), sql).unwrap();
        let package = dir.path().join(format!("database-{name}.zip"));
        let (ok, out) = cli(&[
            "package",
            "build",
            "--module",
            "database",
            "--version",
            "5.9.0",
            "--kind",
            "database",
            "--from",
            s(&dist(dir.path(), "db")),
            "--scripts",
            s(&scripts),
            "--out",
            s(&package),
        ])
        .await;
        assert!(!ok, "{out}");
        assert!(out.contains(said), "{out}");
        assert!(out.contains("no package was written"), "{out}");
        assert!(!package.exists());
    }
}

#[tokio::test]
async fn a_database_package_carries_its_upgrade_scripts_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    for (name, sql) in [
        ("002_add_index.sql", "CREATE INDEX i ON t (a);"),
        ("001_create.sql", "CREATE TABLE t (a INT);"),
        ("010_view.sql", "CREATE VIEW v AS SELECT a FROM t;"),
    ] {
        std::fs::write(scripts.join(name), sql).unwrap();
    }
    let package = dir.path().join("database-5.9.0.zip");
    let (ok, out) = cli(&[
        "package",
        "build",
        "--module",
        "database",
        "--version",
        "5.9.0",
        "--kind",
        "database",
        "--from",
        s(&dist(dir.path(), "db")),
        "--scripts",
        s(&scripts),
        "--out",
        s(&package),
    ])
    .await;
    assert!(ok, "{out}");
    let sha = flotilla_proto::package::sha256_file(&package).unwrap();
    let opened = flotilla_proto::package::Package::open(&package, &sha).unwrap();
    assert_eq!(
        opened.manifest.upgrade_scripts,
        ["001_create.sql", "002_add_index.sql", "010_view.sql"]
    );
    // The scripts are not part of the module's files.
    let unpacked = dir.path().join("unpacked");
    opened
        .unpack(&unpacked, flotilla_proto::package::Limits::default())
        .unwrap();
    assert!(unpacked.join("index.html").is_file() && !unpacked.join("scripts").exists());

    // A manifest naming a script the zip lacks is refused.
    let broken = dir.path().join("broken.zip");
    flotilla_proto::package::build::from_entries(
        &broken,
        "module = \"database\"\nversion = \"5.9.1\"\nkind = \"database\"\nupgrade_scripts = [\"001_missing.sql\"]\n",
        &[("a.txt", b"a")],
    )
    .unwrap();
    let err = flotilla_proto::package::Package::open(
        &broken,
        &flotilla_proto::package::sha256_file(&broken).unwrap(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("upgrade_scripts lists 001_missing.sql, which is not in scripts/"),
        "{err}"
    );
}

/// Uploads an `ecommerce` 2.0.0 package of `size` incompressible bytes to
/// `controller`; returns its bytes and sha256.
async fn upload_noise_package(
    controller: &Controller,
    dir: &Path,
    size: usize,
) -> (Vec<u8>, String) {
    let folder = dir.join("dist");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("blob.bin"), noise(size)).unwrap();
    let package = dir.join("ecommerce-2.0.0.zip");
    flotilla_proto::package::build::from_folder(
        &package,
        "module = \"ecommerce\"\nversion = \"2.0.0\"\nkind = \"web\"\n",
        &folder,
    )
    .unwrap();
    let bytes = std::fs::read(&package).unwrap();
    let sha = sha_of(&bytes);
    assert_eq!(controller.upload(&sha, &bytes).await, 201);
    (bytes, sha)
}
