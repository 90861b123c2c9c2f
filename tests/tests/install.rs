//! Installs as the procedure says, on real agent processes and real files:
//! hook order and environment, rollback from every phase, crash recovery at
//! every journal step, refused packages, locked files, leftover maintenance
//! pages.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flotilla_agent::install::package::{build, sha256_file};
use flotilla_tests::{Agent, Controller, event_texts, module, wait_until};
use serde_json::{Value, json};

/// No controller: installs work without one.
const NO_CONTROLLER: &str = "https://127.0.0.1:9";

const MANIFEST_V2: &str =
    "module = \"ecommerce\"\nversion = \"2.0.0\"\nkind = \"web\"\npreserve = [\"web.config\"]\n";

/// A server with `ecommerce` 1.0.0 installed and 2.0.0 pending.
struct Server {
    agent: Agent,
    module: PathBuf,
    trace: PathBuf,
}

async fn server(dir: &Path, extra_attributes: &str, extra_toml: &str) -> Server {
    server_of(dir, NO_CONTROLLER, extra_attributes, extra_toml).await
}

/// Like [`server`], reporting to the controller at `controller_url`.
async fn server_of(
    dir: &Path,
    controller_url: &str,
    extra_attributes: &str,
    extra_toml: &str,
) -> Server {
    let data = dir.join("web-01");
    let module = data.join("sites").join("ecommerce");
    std::fs::create_dir_all(module.join("bin")).unwrap();
    std::fs::write(module.join("version.txt"), "1.0.0\n").unwrap();
    std::fs::write(module.join("index.html"), "<h1>shop v1</h1>").unwrap();
    std::fs::write(module.join("bin").join("shop.dll"), vec![1u8; 4096]).unwrap();
    std::fs::write(
        module.join("web.config"),
        "<configuration customer=\"acme\"/>",
    )
    .unwrap();
    let packages = data.join("bin/updates/packages");
    std::fs::create_dir_all(&packages).unwrap();
    let package = packages.join("ecommerce-2.0.0.zip");
    build::from_entries(
        &package,
        MANIFEST_V2,
        &[
            ("index.html", b"<h1>shop v2</h1>"),
            ("bin/shop.dll", &[2u8; 8192]),
            ("web.config", b"<configuration default=\"true\"/>"),
            ("version.txt", b"2.0.0\n"),
        ],
    )
    .unwrap();
    write_sidecar(&package);
    std::fs::create_dir_all(data.join("bin/updates/scripts")).unwrap();
    let xml = format!(
        "<applications>\n  <application name=\"ecommerce\" kind=\"web\" path=\"{}\" {extra_attributes}/>\n</applications>\n",
        module.display()
    );
    let extra_toml = format!("{}\n{extra_toml}", flotilla_tests::trusted_publisher());
    let agent = Agent::launch_with(
        dir,
        "acme",
        "web-01",
        controller_url,
        &xml,
        100,
        &extra_toml,
    )
    .await;
    let trace = dir.join("trace.txt");
    Server {
        agent,
        module,
        trace,
    }
}

/// Waits for the install whose status is at `url` to finish; returns the status.
async fn finished(client: &reqwest::Client, url: &str) -> Value {
    wait_until("the install to finish", async || {
        let status: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        if status["running"] == false {
            Ok(status)
        } else {
            Err(status.to_string())
        }
    })
    .await
}

fn write_sidecar(package: &Path) {
    flotilla_tests::sign_beside(package);
}

impl Server {
    fn scripts(&self) -> PathBuf {
        self.agent.data.join("bin/updates/scripts")
    }

    /// A hook that appends its phase and environment to the trace file.
    fn tracing_hook(&self, file_name: &str) {
        let script = format!(
            "printf '%s|%s|%s|%s|%s|%s|offline=%s\\n' \"$E_PHASE\" \"$E_MODULE\" \"$E_MODULE_PATH\" \"$E_BACKUP_PATH\" \"$E_FROM_VERSION\" \"$E_TO_VERSION\" \"$(test -f \"${{E_MODULE_PATH}}app_offline.htm\" && echo yes || echo no)\" >> {}\necho \"hook {file_name} ran\"\n",
            self.trace.display()
        );
        std::fs::write(self.scripts().join(file_name), script).unwrap();
    }

    fn failing_hook(&self, phase: &str) -> PathBuf {
        let path = self.scripts().join(format!("{phase}_ecommerce.sh"));
        std::fs::write(
            &path,
            format!("echo about to fail\necho \"boom in {phase}\" >&2\nexit 3\n"),
        )
        .unwrap();
        path
    }

    /// Installs the pending package through the portal's API and waits for
    /// the result.
    async fn install(&self) -> Value {
        self.install_with(json!({})).await
    }

    async fn install_with(&self, body: Value) -> Value {
        let client = self.agent.portal_http();
        let url = format!("{}/api/modules/ecommerce/install", self.agent.portal_base());
        let response = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            202,
            "{}",
            response.text().await.unwrap()
        );
        finished(&client, &url).await
    }

    /// Puts a package file in the agent's packages folder, signed by the
    /// test publisher; the request that names it (by its sha256).
    fn staged(&self, package: &Path) -> Value {
        let name = package.file_name().unwrap().to_string_lossy().into_owned();
        let target = self
            .agent
            .data
            .join("bin/updates/packages")
            .join(format!("staged-{name}"));
        std::fs::copy(package, &target).unwrap();
        json!({"sha256": flotilla_tests::sign_beside(&target)})
    }

    /// Asks for an install the agent refuses before it starts: its answer.
    async fn refused(&self, body: Value) -> (u16, String) {
        let client = self.agent.portal_http();
        let url = format!("{}/api/modules/ecommerce/install", self.agent.portal_base());
        let response = client.post(&url).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Installs a package of `ecommerce` 3.0.0 (built in `dir`, staged and
    /// signed) and waits for the result.
    async fn install_v3(&self, dir: &Path) -> Value {
        let v3 = dir.join("ecommerce-3.0.0.zip");
        build::from_entries(
            &v3,
            "module = \"ecommerce\"\nversion = \"3.0.0\"\nkind = \"web\"\n",
            &[
                ("index.html", b"<h1>shop v3</h1>"),
                ("version.txt", b"3.0.0\n"),
            ],
        )
        .unwrap();
        self.install_with(self.staged(&v3)).await
    }

    /// The file names in the backup folder.
    fn backups(&self) -> Vec<String> {
        std::fs::read_dir(self.agent.data.join("bin/updates/backups"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn leftovers(&self) -> Vec<String> {
        let parent = self.module.parent().unwrap();
        std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "ecommerce")
            .collect()
    }
}

/// Every file under `dir` with its content.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[tokio::test]
async fn an_install_runs_the_six_phases_in_order_with_the_procedures_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "").await;
    for phase in [
        "STARTUPDATE",
        "PREBACKUP",
        "POSTBACKUP",
        "PREINSTALL",
        "POSTINSTALL",
        "ENDUPDATE",
    ] {
        // Both separators, as the procedure's own examples use.
        let separator = if phase.len() % 2 == 0 { '_' } else { '-' };
        server.tracing_hook(&format!("{phase}{separator}ecommerce.sh"));
    }
    let page = server.agent.portal().await;
    assert!(
        page.contains("1 update to install") && page.contains("action=\"/install/ecommerce\""),
        "{page}"
    );

    let status = server.install().await;
    let result = &status["result"];
    assert_eq!(result["ok"], true, "{status}");
    assert_eq!(result["from"], "1.0.0");
    assert_eq!(result["to"], "2.0.0");
    assert!(result["downtime_ms"].as_u64().unwrap() < 10_000);

    let module_path = format!("{}/", server.module.display());
    let backup_path = format!(
        "{}/",
        server.agent.data.join("bin/updates/backups").display()
    );
    let trace = std::fs::read_to_string(&server.trace).unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    let expect = |phase: &str, offline: &str| {
        format!("{phase}|ecommerce|{module_path}|{backup_path}|1.0.0|2.0.0|offline={offline}")
    };
    assert_eq!(
        lines,
        [
            expect("STARTUPDATE", "no"),
            expect("PREBACKUP", "yes"),
            expect("POSTBACKUP", "yes"),
            expect("PREINSTALL", "yes"),
            expect("POSTINSTALL", "yes"),
            expect("ENDUPDATE", "no"),
        ]
    );
    // The hooks' output reached the progress.
    let events = status["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == "stdout"
            && e["phase"] == "POSTINSTALL"
            && e["text"] == "hook POSTINSTALL-ecommerce.sh ran"),
        "{events:?}"
    );

    let files = tree(&server.module);
    assert_eq!(files["index.html"], b"<h1>shop v2</h1>");
    assert_eq!(files["bin/shop.dll"], vec![2u8; 8192]);
    assert_eq!(
        files["web.config"], b"<configuration customer=\"acme\"/>",
        "preserved across versions"
    );
    assert!(!files.contains_key("app_offline.htm"));
    assert!(server.leftovers().is_empty(), "{:?}", server.leftovers());

    let backups = server.backups();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(backups[0].starts_with("ecommerce_1.0.0_") && backups[0].ends_with(".zip"));

    // Retention: an installed package leaves the cache.
    let package = server
        .agent
        .data
        .join("bin/updates/packages/ecommerce-2.0.0.zip");
    wait_until("the installed package to leave the cache", async || {
        (!package.exists()
            && !std::path::PathBuf::from(format!("{}.sha256", package.display())).exists())
        .then_some(())
        .ok_or(String::new())
    })
    .await;
    wait_until("the portal to show 2.0.0 and nothing pending", async || {
        let page = server.agent.portal().await;
        (page.contains("All up to date") && page.contains("2.0.0"))
            .then_some(())
            .ok_or(page)
    })
    .await;
}

#[tokio::test]
async fn a_hook_failing_in_any_phase_rolls_the_module_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "").await;
    let before = tree(&server.module);
    for phase in [
        "STARTUPDATE",
        "PREBACKUP",
        "POSTBACKUP",
        "PREINSTALL",
        "POSTINSTALL",
        "ENDUPDATE",
    ] {
        let hook = server.failing_hook(phase);
        let status = server.install().await;
        let result = &status["result"];
        assert_eq!(result["ok"], false, "{phase}: {status}");
        assert_eq!(result["phase"], phase, "{status}");
        assert_eq!(result["hook_output"], json!([format!("boom in {phase}")]));
        let message = result["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("in phase {phase}")) && message.contains("exited with 3"),
            "{message}"
        );
        assert_eq!(
            tree(&server.module),
            before,
            "{phase}: the module is exactly the old version"
        );
        assert!(
            server.leftovers().is_empty(),
            "{phase}: {:?}",
            server.leftovers()
        );
        std::fs::remove_file(hook).unwrap();
    }
    // And with the hook gone, the install goes through.
    assert_eq!(server.install().await["result"]["ok"], true);
}

#[tokio::test]
async fn an_agent_killed_at_any_step_recovers_to_wholly_old_or_wholly_new() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path(), "", "").await;
    let old = tree(&server.module);
    // Points before the commit roll back; after it, the install is finished.
    let points = [
        ("STARTUPDATE", false),
        ("out_of_service", false),
        ("PREBACKUP", false),
        ("set_aside", false),
        ("set_aside.renamed", false),
        ("POSTBACKUP", false),
        ("PREINSTALL", false),
        ("swap_in", false),
        ("swap_in.shell_removed", false),
        ("POSTINSTALL", false),
        ("back_in_service", false),
        ("ENDUPDATE", false),
        ("commit", true),
    ];
    for (point, finished) in points {
        server
            .agent
            .relaunch(
                "flotilla-agent-crashpoints",
                &[("FLOTILLA_CRASH_AT", point)],
            )
            .await;
        let url = format!(
            "{}/api/modules/ecommerce/install",
            server.agent.portal_base()
        );
        let response = server
            .agent
            .portal_http()
            .post(&url)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202);
        let status = server.agent.child.wait().await.unwrap();
        assert!(!status.success(), "{point}: the agent must have crashed");

        server.agent.relaunch("flotilla-agent", &[]).await;
        let files = tree(&server.module);
        assert!(
            !files.contains_key("app_offline.htm"),
            "{point}: maintenance page left behind"
        );
        assert!(
            server.leftovers().is_empty(),
            "{point}: {:?}",
            server.leftovers()
        );
        if finished {
            assert_eq!(files["index.html"], b"<h1>shop v2</h1>", "{point}");
            assert_eq!(
                files["web.config"], b"<configuration customer=\"acme\"/>",
                "{point}"
            );
        } else {
            assert_eq!(files, old, "{point}: wholly the old version");
        }
        let page = server.agent.portal().await;
        assert!(
            page.contains("interrupted install of ecommerce 2.0.0 was"),
            "{point}: {page}"
        );
    }
}

#[tokio::test]
async fn bad_packages_are_refused_before_anything_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "").await;
    let before = tree(&server.module);
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();

    let good = server
        .agent
        .data
        .join("bin/updates/packages/ecommerce-2.0.0.zip");

    // Refused before an install starts, with nothing revealed of any file
    // the caller did not give: a path instead of a sha256, a sha256 the
    // agent has no package for (a truncated package, or another module's,
    // is no package of this module), an unsigned package, one signed by a
    // key the agent does not trust.
    let truncated = bad.join("truncated.zip");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let other_module = bad.join("other.zip");
    build::from_entries(
        &other_module,
        "module = \"phygitalapi\"\nversion = \"2.0.0\"\nkind = \"web\"\n",
        &[("a.txt", b"a")],
    )
    .unwrap();
    let packages = server.agent.data.join("bin/updates/packages");
    let unsigned = packages.join("ecommerce-2.1.0.zip");
    build::from_entries(
        &unsigned,
        "module = \"ecommerce\"\nversion = \"2.1.0\"\nkind = \"web\"\n",
        &[("a.txt", b"a")],
    )
    .unwrap();
    let unsigned_sha = sha256_file(&unsigned).unwrap();
    std::fs::write(format!("{}.sha256", unsigned.display()), &unsigned_sha).unwrap();
    let stranger = packages.join("ecommerce-2.2.0.zip");
    build::from_entries(
        &stranger,
        "module = \"ecommerce\"\nversion = \"2.2.0\"\nkind = \"web\"\n",
        &[("a.txt", b"b")],
    )
    .unwrap();
    let stranger_sha = sha256_file(&stranger).unwrap();
    std::fs::write(format!("{}.sha256", stranger.display()), &stranger_sha).unwrap();
    let attacker = flotilla_proto::signing::SecretKey::generate().unwrap();
    std::fs::write(
        format!("{}.sig", stranger.display()),
        attacker.sign_package(&stranger_sha),
    )
    .unwrap();
    let hostname_sha = sha256_file(Path::new("/etc/hostname")).unwrap_or_default();
    let truncated_request = server.staged(&truncated);
    let other_request = server.staged(&other_module);
    for (request, status, says) in [
        (
            json!({"package": "../../../../etc/hostname", "sha256": "0".repeat(64)}),
            422,
            "unknown field `package`",
        ),
        (
            json!({"sha256": "0".repeat(64)}),
            404,
            "no package of ecommerce with sha256 0000",
        ),
        (
            truncated_request,
            404,
            "no package of ecommerce with sha256",
        ),
        (other_request, 404, "no package of ecommerce with sha256"),
        (
            json!({"sha256": unsigned_sha}),
            403,
            "it is not signed, and this agent installs unsigned packages only with allow_unsigned_local_packages = true",
        ),
        (
            json!({"sha256": stranger_sha}),
            403,
            "its signature is not trusted",
        ),
    ] {
        let (got, body) = server.refused(request.clone()).await;
        assert_eq!(got, status, "{request}: {body}");
        assert!(body.contains(says), "{request}: {body}");
        assert!(
            hostname_sha.is_empty() || !body.contains(&hostname_sha),
            "{body}"
        );
        assert_eq!(tree(&server.module), before);
    }
    // Neither of them outranks the signed 2.0.0 as the pending package.
    let page = server.agent.portal().await;
    assert!(page.contains("2.0.0"), "{page}");

    let other_kind = bad.join("kind.zip");
    build::from_entries(
        &other_kind,
        "module = \"ecommerce\"\nversion = \"2.0.0\"\nkind = \"service\"\n",
        &[("a.txt", b"a")],
    )
    .unwrap();

    let slip = bad.join("slip.zip");
    build::from_entries(&slip, MANIFEST_V2, &[("../../escaped.txt", b"gotcha")]).unwrap();

    let bomb = bad.join("bomb.zip");
    let zeros = vec![0u8; 64 << 20];
    build::from_entries_at_level(&bomb, MANIFEST_V2, &[("zeros.bin", &zeros)], 9).unwrap();

    let cases = [
        (
            server.staged(&other_kind),
            "is a service package but module ecommerce is a web module",
        ),
        (server.staged(&slip), "escaping the package"),
        (server.staged(&bomb), "zip bomb"),
    ];
    for (request, says) in cases {
        let status = server.install_with(request.clone()).await;
        let result = &status["result"];
        assert_eq!(result["ok"], false, "{request}");
        assert!(
            result["message"].as_str().unwrap().contains(says),
            "{request}: {}",
            result["message"]
        );
        assert!(
            result["message"]
                .as_str()
                .unwrap()
                .contains("nothing was changed"),
            "{}",
            result["message"]
        );
        assert_eq!(tree(&server.module), before);
        assert!(server.leftovers().is_empty(), "{:?}", server.leftovers());
    }
    assert!(
        !dir.path().join("escaped.txt").exists()
            && !server.module.parent().unwrap().join("escaped.txt").exists()
    );
}

#[tokio::test]
async fn an_unwritable_backup_folder_stops_the_install_before_it_touches_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, "a file where the backup folder should be").unwrap();
    let backup_dir = blocker.join("backups");
    let server = server(
        dir.path(),
        "",
        &format!("backup_dir = {:?}", backup_dir.display().to_string()),
    )
    .await;
    let before = tree(&server.module);
    let status = server.install().await;
    let message = status["result"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "the backup folder {} is not writable",
            backup_dir.display()
        )),
        "{message}"
    );
    assert!(message.contains("nothing was changed"));
    assert_eq!(tree(&server.module), before);
}

#[tokio::test]
async fn postbackup_finds_the_finished_backup_of_the_version_taken_down() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "").await;
    let copy = dir.path().join("copied-by-postbackup.zip");
    // The running application writes between the early compression and the
    // downtime (STARTUPDATE runs while the module is still in service).
    std::fs::write(
        server.scripts().join("STARTUPDATE_ecommerce.sh"),
        "printf ' and an order' >> \"${E_MODULE_PATH}index.html\"\n",
    )
    .unwrap();
    // A customer's hook copies the backup to another disk.
    std::fs::write(
        server.scripts().join("POSTBACKUP_ecommerce.sh"),
        format!("cp \"$(ls -t \"$E_BACKUP_PATH\"*.zip | head -1)\" {copy:?}\n"),
    )
    .unwrap();
    let mut old = tree(&server.module);
    old.get_mut("index.html")
        .unwrap()
        .extend_from_slice(b" and an order");

    let status = server.install().await;
    assert_eq!(status["result"]["ok"], true, "{status}");
    let texts = event_texts(&status);
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("old version compressed while in service")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("3 files compressed while in service, 1 since")),
        "only the changed file was compressed in the downtime: {texts:?}"
    );
    let unzipped = dir.path().join("unzipped");
    let unzip = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&copy)
        .arg(&unzipped)
        .status()
        .unwrap();
    assert!(unzip.success(), "POSTBACKUP found a complete zip");
    assert_eq!(
        tree(&unzipped),
        old,
        "the old version exactly as it was taken down"
    );
    // The backup kept is that same zip, and nothing else is left.
    let backups = server.backups();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(
        std::fs::read(
            server
                .agent
                .data
                .join("bin/updates/backups")
                .join(&backups[0])
        )
        .unwrap(),
        std::fs::read(&copy).unwrap()
    );
    assert!(server.leftovers().is_empty(), "{:?}", server.leftovers());
}

#[tokio::test]
async fn only_the_newest_backups_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "backups_to_keep = 1").await;
    assert_eq!(server.install().await["result"]["ok"], true);
    let status = server.install_v3(dir.path()).await;
    assert_eq!(status["result"]["ok"], true, "{status}");
    let backups = server.backups();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(backups[0].starts_with("ecommerce_2.0.0_"), "{backups:?}");
}

#[tokio::test]
async fn a_backup_that_cannot_be_written_is_a_warning_that_leaves_nothing_in_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let controller_dir = dir.path().join("controller");
    std::fs::create_dir_all(&controller_dir).unwrap();
    let controller = Controller::start(&controller_dir).await;
    let server = server_of(dir.path(), &controller.grpc_url, "", "").await;
    let backups = server.agent.data.join("bin/updates/backups");
    let moved = server.agent.data.join("bin/updates/backups-moved");
    // Once the module is out of service, the backup folder becomes a file:
    // the zip cannot be written, as with a sharing violation on Windows.
    std::fs::write(
        server.scripts().join("PREBACKUP_ecommerce.sh"),
        format!(
            "mv \"${{E_BACKUP_PATH%/}}\" {moved:?} && echo 'not a folder' > \"${{E_BACKUP_PATH%/}}\"\n"
        ),
    )
    .unwrap();
    let old = tree(&server.module);
    controller
        .wait_for_server("web-01", "2.0.0 pending", |s| {
            module(s, "ecommerce")["pending_version"] == "2.0.0"
        })
        .await;

    let status = server.install().await;
    let result = &status["result"];
    assert_eq!(result["ok"], true, "the new version is in place: {status}");
    assert!(result["backup"].is_null(), "{status}");
    let warnings = result["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{status}");
    let warning = warnings[0].as_str().unwrap();
    let leftovers = server.leftovers();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    let kept = server.module.with_file_name(&leftovers[0]);
    assert!(
        leftovers[0].starts_with(".ecommerce_1.0.0_")
            && leftovers[0].ends_with(".flotilla-unsaved"),
        "the old version is kept, out of the next install's way: {leftovers:?}"
    );
    assert!(
        warning.starts_with("no backup of ecommerce 1.0.0 was written to ")
            && warning.contains(&format!(
                "the old version is kept in {}, and the next install of ecommerce backs it up",
                kept.display()
            )),
        "{warning}"
    );
    assert_eq!(tree(&kept), old, "nothing of the old version is lost");
    let tmp: Vec<_> = std::fs::read_dir(&moved)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "no .zip.tmp: {tmp:?}");
    // The controller and its dashboard see the warning.
    let done = controller
        .wait_for_server("web-01", "2.0.0 installed with a warning", |s| {
            let m = module(s, "ecommerce");
            m["installed_version"] == "2.0.0" && m["last_install"]["state"] == "succeeded"
        })
        .await;
    let install = &module(&done, "ecommerce")["last_install"];
    assert_eq!(install["warnings"], json!([warning]), "{install}");
    assert!(
        install["message"].as_str().unwrap().contains(warning),
        "{install}"
    );

    // Once the folder is back, the next install goes through and backs up
    // both old versions.
    std::fs::remove_file(server.scripts().join("PREBACKUP_ecommerce.sh")).unwrap();
    std::fs::remove_file(&backups).unwrap();
    std::fs::rename(&moved, &backups).unwrap();
    let status = server.install_v3(dir.path()).await;
    assert_eq!(status["result"]["ok"], true, "{status}");
    assert_eq!(status["result"]["warnings"], json!([]), "{status}");
    assert!(server.leftovers().is_empty(), "{:?}", server.leftovers());
    let mut zips: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    zips.sort();
    assert_eq!(zips.len(), 2, "{zips:?}");
    assert!(
        zips[0].starts_with("ecommerce_1.0.0_") && zips[1].starts_with("ecommerce_2.0.0_"),
        "{zips:?}"
    );
    let unzipped = dir.path().join("unzipped");
    let unzip = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(backups.join(&zips[0]))
        .arg(&unzipped)
        .status()
        .unwrap();
    assert!(unzip.success());
    assert_eq!(tree(&unzipped), old, "the late backup is the old version");
}

#[tokio::test]
async fn stopping_the_agent_lets_a_running_install_finish_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path(), "", "").await;
    let started = dir.path().join("postinstall-started");
    let go = dir.path().join("go");
    // POSTINSTALL holds the install until the test lets it go.
    std::fs::write(
        server.scripts().join("POSTINSTALL_ecommerce.sh"),
        format!("touch {started:?}\nwhile [ ! -f {go:?} ]; do sleep 0.05; done\necho let go\n"),
    )
    .unwrap();
    let client = server.agent.portal_http();
    let url = format!(
        "{}/api/modules/ecommerce/install",
        server.agent.portal_base()
    );
    let response = client.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
    wait_until("POSTINSTALL to run", async || {
        started.exists().then_some(()).ok_or(String::new())
    })
    .await;

    // Asked to stop (systemd's SIGTERM; the SCM's stop on Windows), the
    // agent waits for the install and starts no other.
    flotilla_tests::signal(&server.agent.child, "TERM").await;
    wait_until("the agent to say it waits", async || {
        let log = server.agent.log();
        log.contains("waiting for the install of ecommerce to finish before stopping")
            .then_some(())
            .ok_or(log)
    })
    .await;
    assert!(
        server.agent.child.try_wait().unwrap().is_none(),
        "still running"
    );
    let refused = client.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 409);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("the agent is stopping"),
        "a new install is refused while it stops"
    );

    std::fs::write(&go, "").unwrap();
    let status = server.agent.child.wait().await.unwrap();
    assert!(status.success(), "a clean stop: {status}");
    let files = tree(&server.module);
    assert_eq!(
        files["index.html"], b"<h1>shop v2</h1>",
        "the install finished"
    );
    assert!(!files.contains_key("app_offline.htm"));
    assert!(server.leftovers().is_empty(), "{:?}", server.leftovers());
    assert!(
        !server
            .agent
            .data
            .join("bin/updates/journal/ecommerce.journal")
            .exists(),
        "nothing left for recovery"
    );
    let log = server.agent.log();
    assert!(
        log.contains("the install of ecommerce ended; stopping"),
        "{log}"
    );
}

#[tokio::test]
async fn leftover_maintenance_pages_are_repaired_at_start_by_the_procedures_rule() {
    for with_bak in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("web-01/sites/ecommerce");
        std::fs::create_dir_all(&module).unwrap();
        std::fs::write(module.join("version.txt"), "1.0.0").unwrap();
        std::fs::write(module.join("app_offline.htm"), "stuck").unwrap();
        if with_bak {
            std::fs::write(module.join("app_offline.bak"), "older").unwrap();
        }
        let xml = format!(
            "<applications><application name=\"ecommerce\" kind=\"web\" path=\"{}\"/></applications>",
            module.display()
        );
        let agent =
            Agent::launch_with(dir.path(), "acme", "web-01", NO_CONTROLLER, &xml, 100, "").await;
        assert!(!module.join("app_offline.htm").exists());
        let bak = std::fs::read_to_string(module.join("app_offline.bak")).unwrap();
        let page = agent.portal().await;
        if with_bak {
            assert_eq!(
                bak, "older",
                "an existing .bak is kept and the page deleted"
            );
            assert!(page.contains("deleted the leftover"), "{page}");
        } else {
            assert_eq!(bak, "stuck", "the page is renamed to .bak");
            assert!(page.contains("renamed the leftover"), "{page}");
        }
    }
}

#[tokio::test]
async fn processes_holding_files_are_named_and_the_lock_policy_escalates() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started-again");
    // The module's own stop command ends the process holding its folder.
    let attributes = format!(
        "stopCommand=\"pkill -f 'sleep 777[7]'\" startCommand=\"touch {}\"",
        marker.display()
    );
    let server = server(dir.path(), &attributes, "lock_budget_ms = 600").await;
    let mut holder = tokio::process::Command::new("sleep")
        .arg("7777")
        .current_dir(&server.module)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = holder.id().unwrap();
    let status = server.install().await;
    assert_eq!(status["result"]["ok"], true, "{status}");
    let warnings: Vec<&str> = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "warning")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert!(
        warnings.iter().any(|w| w.starts_with("attempt 1:")
            && w.contains(&format!("pid {pid} ("))
            && w.contains("sleep")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.starts_with("attempt 2:")),
        "retried: {warnings:?}"
    );
    let steps: Vec<&str> = event_texts(&status);
    assert!(
        steps
            .iter()
            .any(|s| s.contains("stopping the module's stop/start commands")),
        "{steps:?}"
    );
    assert!(
        holder.try_wait().unwrap().is_some(),
        "the holder was stopped"
    );
    assert!(marker.exists(), "the module was started again");
}

#[tokio::test]
async fn a_holder_that_never_lets_go_fails_the_install_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "lock_budget_ms = 1500").await;
    let before = tree(&server.module);
    let _holder = tokio::process::Command::new("sleep")
        .arg("7778")
        .current_dir(&server.module)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = server.install().await;
    let result = &status["result"];
    assert_eq!(result["ok"], false);
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("are still held after") && message.contains("sleep"),
        "{message}"
    );
    assert!(message.contains("rolled back"), "{message}");
    // The whole budget was waited out, and the message says how long.
    let waited: f64 = message
        .split_once("attempts over ")
        .and_then(|(_, rest)| rest.split_once(" s:"))
        .map(|(seconds, _)| seconds.parse().unwrap())
        .unwrap_or_else(|| panic!("no measured time in {message}"));
    assert!(
        waited >= 1.5,
        "gave up after {waited} s of a 1.5 s budget: {message}"
    );
    assert_eq!(tree(&server.module), before);
}

#[tokio::test]
async fn a_second_install_while_one_runs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "").await;
    std::fs::write(
        server.scripts().join("STARTUPDATE_ecommerce.sh"),
        "sleep 1\n",
    )
    .unwrap();
    let first = server.agent.submit_form("/install/ecommerce").await;
    assert!(first.status().is_success(), "{}", first.status());
    let second = server.agent.submit_form("/install/ecommerce").await;
    assert_eq!(second.status().as_u16(), 409);
    assert!(
        second
            .text()
            .await
            .unwrap()
            .contains("an install of ecommerce is already running")
    );
}

#[tokio::test]
async fn a_hook_that_hangs_or_cannot_run_fails_the_install_with_a_clear_cause() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "hook_timeout_seconds = 1").await;
    let before = tree(&server.module);

    let hanging = server.scripts().join("POSTBACKUP_ecommerce.sh");
    std::fs::write(&hanging, "echo waiting forever\nsleep 600\n").unwrap();
    let result = server.install().await["result"].clone();
    assert_eq!(result["phase"], "POSTBACKUP");
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 1 s and was stopped"),
        "{result}"
    );
    assert_eq!(tree(&server.module), before);
    std::fs::remove_file(hanging).unwrap();

    // PowerShell hooks need pwsh on Linux; without it the cause says so.
    let powershell = server.scripts().join("PREINSTALL_ecommerce.ps1");
    std::fs::write(&powershell, "Write-Output 'hello'\n").unwrap();
    let result = server.install().await["result"].clone();
    if std::env::split_paths(&std::env::var_os("PATH").unwrap()).any(|d| d.join("pwsh").is_file()) {
        assert_eq!(result["ok"], true, "{result}");
    } else {
        assert_eq!(result["phase"], "PREINSTALL");
        assert!(
            result["message"]
                .as_str()
                .unwrap()
                .contains("is a PowerShell script but PowerShell (pwsh) is not installed"),
            "{result}"
        );
        assert_eq!(tree(&server.module), before);
    }
}

#[tokio::test]
async fn the_controller_orders_an_install_and_sees_its_progress_and_result() {
    let dir = tempfile::tempdir().unwrap();
    let controller_dir = dir.path().join("controller");
    std::fs::create_dir_all(&controller_dir).unwrap();
    let controller = Controller::start(&controller_dir).await;
    let server = server_of(dir.path(), &controller.grpc_url, "", "").await;
    controller
        .wait_for_server("web-01", "2.0.0 pending", |s| {
            module(s, "ecommerce")["pending_version"] == "2.0.0"
        })
        .await;
    let client = flotilla_tests::http();
    let order = format!(
        "{}/api/v1/servers/web-01/modules/ecommerce/install",
        controller.http_url
    );

    // A hook fails: the controller sees where, why, and the rollback.
    let hook = server.failing_hook("PREINSTALL");
    let response = client.post(&order).json(&json!({})).send().await.unwrap();
    assert_eq!(
        response.status().as_u16(),
        202,
        "{}",
        response.text().await.unwrap()
    );
    // Failed, and rolled back to 1.0.0 (a scan during the install may have
    // caught the module mid-swap; the rescan after it shows the result).
    let failed = controller
        .wait_for_server("web-01", "the failed install, rolled back", |s| {
            let m = module(s, "ecommerce");
            m["last_install"]["state"] == "failed" && m["installed_version"] == "1.0.0"
        })
        .await;
    let install = &module(&failed, "ecommerce")["last_install"];
    assert_eq!(install["phase"], "PREINSTALL");
    assert_eq!(install["hook_output"], json!(["boom in PREINSTALL"]));
    assert_eq!(install["rolled_back"], true);
    assert_eq!(install["ordered_by_controller"], true);
    assert_eq!(module(&failed, "ecommerce")["installed_version"], "1.0.0");
    std::fs::remove_file(hook).unwrap();

    // Then it goes through.
    let response = client.post(&order).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let done = controller
        .wait_for_server("web-01", "2.0.0 installed", |s| {
            let m = module(s, "ecommerce");
            m["installed_version"] == "2.0.0" && m["last_install"]["state"] == "succeeded"
        })
        .await;
    let install = &module(&done, "ecommerce")["last_install"];
    assert!(
        install["downtime_ms"].as_i64().unwrap() < 10_000,
        "{install}"
    );
    assert!(module(&done, "ecommerce")["pending_version"].is_null());

    let (status, installs) = controller.get("/api/v1/servers/web-01/installs").await;
    assert_eq!(status, 200);
    assert_eq!(installs.as_array().unwrap().len(), 2);
    let id = install["install_id"].as_str().unwrap();
    let (_, detail) = controller
        .get(&format!("/api/v1/servers/web-01/installs/{id}"))
        .await;
    let phases: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "phase")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "STARTUPDATE",
            "PREBACKUP",
            "POSTBACKUP",
            "PREINSTALL",
            "POSTINSTALL",
            "ENDUPDATE"
        ]
    );

    // Nothing left to install: the agent's refusal comes back as a 409.
    let response = client.post(&order).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no package is pending for ecommerce"),
        "{body}"
    );

    // An offline server cannot be ordered to install.
    let mut agent = server.agent;
    agent.child.kill().await.unwrap();
    controller
        .wait_for_server("web-01", "offline", |s| s["online"] == false)
        .await;
    let response = client.post(&order).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("is not connected"),
        "{body}"
    );
}

/// Runs `flotilla-agent <args>` against the agent's configuration and portal.
async fn agent_cli(agent: &Agent, args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(flotilla_tests::binary("flotilla-agent"))
        .args(args)
        .arg("--config")
        .arg(agent.data.join("agent.toml"))
        .arg("--portal")
        .arg(agent.portal_base())
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn a_kept_backup_is_restored_on_demand_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "").await;
    let old = tree(&server.module);
    let (ok, output) = agent_cli(&server.agent, &["install", "ecommerce"]).await;
    assert!(ok, "{output}");
    assert!(
        output.contains("== STARTUPDATE")
            && output.contains("ecommerce 2.0.0 installed; out of service for"),
        "{output}"
    );
    let new = tree(&server.module);

    let (ok, output) = agent_cli(&server.agent, &["rollback", "ecommerce"]).await;
    assert!(ok, "{output}");
    assert!(output.contains("ecommerce: installing 1.0.0"), "{output}");
    assert_eq!(
        tree(&server.module),
        old,
        "the kept 1.0.0 is back, byte for byte"
    );

    // The version rolled back from was kept in turn: it can be restored too.
    let (ok, output) = agent_cli(&server.agent, &["rollback", "ecommerce", "--to", "2.0.0"]).await;
    assert!(ok, "{output}");
    assert_eq!(tree(&server.module), new);

    let (ok, output) = agent_cli(&server.agent, &["rollback", "ecommerce", "--to", "9.9.9"]).await;
    assert!(!ok);
    assert!(
        output.contains("no backup of ecommerce 9.9.9 is kept on this server"),
        "{output}"
    );
}

#[tokio::test]
async fn the_controller_orders_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let controller_dir = dir.path().join("controller");
    std::fs::create_dir_all(&controller_dir).unwrap();
    let controller = Controller::start(&controller_dir).await;
    let server = server_of(dir.path(), &controller.grpc_url, "", "").await;
    let old = tree(&server.module);
    assert_eq!(server.install().await["result"]["ok"], true);
    controller
        .wait_for_server("web-01", "2.0.0", |s| {
            module(s, "ecommerce")["installed_version"] == "2.0.0"
        })
        .await;
    let response = flotilla_tests::http()
        .post(format!(
            "{}/api/v1/servers/web-01/modules/ecommerce/rollback",
            controller.http_url
        ))
        .json(&json!({"to": "1.0.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        202,
        "{}",
        response.text().await.unwrap()
    );
    let back = controller
        .wait_for_server("web-01", "1.0.0 restored", |s| {
            let m = module(s, "ecommerce");
            m["installed_version"] == "1.0.0" && m["last_install"]["state"] == "succeeded"
        })
        .await;
    assert_eq!(
        module(&back, "ecommerce")["last_install"]["to_version"],
        "1.0.0"
    );
    assert_eq!(tree(&server.module), old);
}

#[tokio::test]
async fn the_backup_holds_the_old_version_exactly_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "").await;
    let old = tree(&server.module);
    assert_eq!(server.install().await["result"]["ok"], true);
    let backups = server.agent.data.join("bin/updates/backups");
    let zip = std::fs::read_dir(&backups)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // Unzip it with the system's own tool, as an operator would.
    let unzipped = dir.path().join("unzipped");
    let status = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&zip)
        .arg(&unzipped)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        tree(&unzipped),
        old,
        "no maintenance page, nothing added, nothing missing"
    );
}

#[tokio::test]
async fn a_service_module_is_stopped_for_the_swap_and_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("app-01");
    let module = data.join("services/integration");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(module.join("version.txt"), "3.0.0\n").unwrap();
    std::fs::write(module.join("integration.bin"), "v3").unwrap();
    let packages = data.join("bin/updates/packages");
    std::fs::create_dir_all(&packages).unwrap();
    let package = packages.join("integration-3.1.0.zip");
    build::from_entries(
        &package,
        "module = \"integration\"\nversion = \"3.1.0\"\nkind = \"service\"\n",
        &[("integration.bin", b"v3.1")],
    )
    .unwrap();
    write_sidecar(&package);
    let trace = dir.path().join("trace.txt");
    let scripts = data.join("bin/updates/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    for phase in [
        "STARTUPDATE",
        "PREBACKUP",
        "POSTBACKUP",
        "PREINSTALL",
        "POSTINSTALL",
        "ENDUPDATE",
    ] {
        std::fs::write(
            scripts.join(format!("{phase}_integration.sh")),
            format!("echo \"$E_PHASE\" >> {}\n", trace.display()),
        )
        .unwrap();
    }
    let xml = format!(
        "<applications><application name=\"integration\" kind=\"service\" path=\"{}\" stopCommand=\"echo stopped &gt;&gt; {t}\" startCommand=\"echo started &gt;&gt; {t}\"/></applications>",
        module.display(),
        t = trace.display()
    );
    let agent = Agent::launch_with(
        dir.path(),
        "acme",
        "app-01",
        NO_CONTROLLER,
        &xml,
        100,
        &flotilla_tests::trusted_publisher(),
    )
    .await;
    let client = agent.portal_http();
    let url = format!("{}/api/modules/integration/install", agent.portal_base());
    assert_eq!(
        client
            .post(&url)
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        202
    );
    let status: Value = finished(&client, &url).await;
    assert_eq!(status["result"]["ok"], true, "{status}");
    let lines: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        [
            "STARTUPDATE",
            "stopped",
            "PREBACKUP",
            "POSTBACKUP",
            "PREINSTALL",
            "POSTINSTALL",
            "started",
            "ENDUPDATE"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(module.join("integration.bin")).unwrap(),
        "v3.1"
    );
    assert!(
        !module.join("app_offline.htm").exists(),
        "no maintenance page for a service"
    );
}

#[tokio::test]
async fn a_failed_health_check_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "").await;
    let before = tree(&server.module);
    let unhealthy = dir.path().join("unhealthy.zip");
    build::from_entries(
        &unhealthy,
        "module = \"ecommerce\"\nversion = \"2.1.0\"\nkind = \"web\"\n[health_check]\nurl = \"http://127.0.0.1:9/health\"\ntimeout_seconds = 1\n",
        &[("index.html", b"<h1>broken</h1>")],
    )
    .unwrap();
    let result = server.install_with(server.staged(&unhealthy)).await["result"].clone();
    assert_eq!(result["ok"], false);
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("health check http://127.0.0.1:9/health failed")
            && message.contains("rolled back"),
        "{message}"
    );
    assert_eq!(tree(&server.module), before);
}

#[tokio::test]
async fn a_rollback_that_fails_is_reported_loudly_and_leaves_the_module_in_maintenance() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "").await;
    // A hook that destroys the set-aside old version, then fails.
    std::fs::write(
        server.scripts().join("POSTINSTALL_ecommerce.sh"),
        "rm -rf \"$(dirname \"$E_MODULE_PATH\")/.ecommerce.flotilla-previous\"\nexit 1\n",
    )
    .unwrap();
    let result = server.install().await["result"].clone();
    assert_eq!(result["ok"], false);
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("ROLLBACK FAILED") && message.contains("is gone"),
        "{message}"
    );
    assert!(
        result["rollback_error"]
            .as_str()
            .unwrap()
            .contains("restore a kept backup"),
        "{result}"
    );
    let page = std::fs::read_to_string(server.module.join("app_offline.htm")).unwrap();
    assert!(
        page.contains("could not be completed and needs an operator"),
        "{page}"
    );
    assert!(
        server
            .agent
            .data
            .join("bin/updates/journal/ecommerce.journal")
            .exists(),
        "kept for the next start"
    );
}

#[tokio::test]
async fn too_little_disk_space_stops_the_install_before_it_touches_the_module() {
    let dir = tempfile::tempdir().unwrap();
    // A reserve no disk here can honour: 100 PB.
    let server = server(dir.path(), "", "disk_reserve_mb = 100000000000").await;
    let before = tree(&server.module);
    let result = server.install().await["result"].clone();
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "not enough space beside {}",
            server.module.display()
        )) && message.contains("plus the 100000000000 MB reserve; nothing was changed"),
        "{message}"
    );
    assert_eq!(tree(&server.module), before);
    assert!(server.leftovers().is_empty());
}

#[tokio::test]
async fn a_holder_that_lets_go_within_the_budget_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "lock_budget_ms = 60000").await;
    let mut holder = tokio::process::Command::new("sleep")
        .arg("7780")
        .current_dir(&server.module)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = holder.id().unwrap();
    let client = server.agent.portal_http();
    let url = format!(
        "{}/api/modules/ecommerce/install",
        server.agent.portal_base()
    );
    assert_eq!(
        client
            .post(&url)
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        202
    );
    // The install names the holder and waits; the holder then goes away.
    wait_until("the holder to be named", async || {
        let status: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        let named = status["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["text"].as_str().unwrap().starts_with("attempt 1:"));
        named.then_some(()).ok_or(status.to_string())
    })
    .await;
    holder.kill().await.unwrap();
    let status: Value = finished(&client, &url).await;
    assert_eq!(status["result"]["ok"], true, "{status}");
    let texts: Vec<&str> = event_texts(&status);
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("attempt 1:") && t.contains(&format!("pid {pid} ("))),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.starts_with("files released after")),
        "{texts:?}"
    );
    assert!(
        !texts.iter().any(|t| t.contains("stopping")),
        "no escalation was needed: {texts:?}"
    );
}

#[tokio::test]
async fn a_holder_that_survives_the_escalation_fails_the_install_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // The module's stop command stops nothing.
    let server = server(
        dir.path(),
        "stopCommand=\"true\" startCommand=\"true\"",
        "lock_budget_ms = 300",
    )
    .await;
    let before = tree(&server.module);
    let _holder = tokio::process::Command::new("sleep")
        .arg("7779")
        .current_dir(&server.module)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = server.install().await;
    let texts: Vec<&str> = event_texts(&status);
    assert!(
        texts
            .iter()
            .any(|t| t.contains("stopping the module's stop/start commands")),
        "{texts:?}"
    );
    let message = status["result"]["message"].as_str().unwrap();
    assert!(
        message.contains("are still held after")
            && message.contains("sleep")
            && message.contains("rolled back"),
        "{message}"
    );
    assert_eq!(tree(&server.module), before);
}

#[tokio::test]
async fn the_maintenance_page_says_what_is_updated_and_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "").await;
    let copy = dir.path().join("page-seen-by-hook.htm");
    std::fs::write(
        server.scripts().join("POSTINSTALL_ecommerce.sh"),
        format!(
            "cp \"${{E_MODULE_PATH}}app_offline.htm\" {}\n",
            copy.display()
        ),
    )
    .unwrap();
    assert_eq!(server.install().await["result"]["ok"], true);
    let page = std::fs::read_to_string(&copy).unwrap();
    assert!(
        page.contains("ecommerce is being updated to version 2.0.0"),
        "{page}"
    );
    let until = page.split("Expected back by ").nth(1).unwrap();
    assert!(
        until.as_bytes()[2] == b':' && until.as_bytes()[5] == b':',
        "a time of day: {page}"
    );
    // The next install's estimate comes from this one's measured downtime.
    let log = std::fs::read_to_string(server.agent.data.join("bin/updates/downtimes.log")).unwrap();
    assert!(log.starts_with("ecommerce "), "{log}");
}

#[tokio::test]
async fn an_older_package_is_refused_as_a_downgrade() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "").await;
    let before = tree(&server.module);
    let older = dir.path().join("older.zip");
    build::from_entries(
        &older,
        "module = \"ecommerce\"\nversion = \"0.9.0\"\nkind = \"web\"\n",
        &[("index.html", b"old")],
    )
    .unwrap();
    let result = server.install_with(server.staged(&older)).await["result"].clone();
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("ecommerce 0.9.0 is older than the installed 1.0.0: downgrade refused"),
        "{message}"
    );
    assert!(message.contains("nothing was changed"), "{message}");
    assert_eq!(tree(&server.module), before);
}

#[tokio::test]
async fn a_downgrade_goes_through_only_when_explicitly_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let controller_dir = dir.path().join("controller");
    std::fs::create_dir_all(&controller_dir).unwrap();
    let controller = Controller::start(&controller_dir).await;
    let server = server_of(dir.path(), &controller.grpc_url, "", "").await;
    controller
        .wait_for_server("web-01", "online", |s| s["online"] == true)
        .await;
    let older = dir.path().join("older.zip");
    build::from_entries(
        &older,
        "module = \"ecommerce\"\nversion = \"0.9.0\"\nkind = \"web\"\n",
        &[("index.html", b"old")],
    )
    .unwrap();
    let order = format!(
        "{}/api/v1/servers/web-01/modules/ecommerce/install",
        controller.http_url
    );
    let client = flotilla_tests::http();
    let mut body = server.staged(&older);

    assert_eq!(
        client
            .post(&order)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        202
    );
    let refused = controller
        .wait_for_server("web-01", "the refused downgrade", |s| {
            module(s, "ecommerce")["last_install"]["state"] == "failed"
        })
        .await;
    let message = module(&refused, "ecommerce")["last_install"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("downgrade refused"), "{message}");

    body["allow_downgrade"] = json!(true);
    assert_eq!(
        client
            .post(&order)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        202
    );
    controller
        .wait_for_server("web-01", "0.9.0 installed", |s| {
            module(s, "ecommerce")["installed_version"] == "0.9.0"
        })
        .await;
    assert_eq!(
        std::fs::read(server.module.join("index.html")).unwrap(),
        b"old"
    );
}

#[tokio::test]
async fn the_portal_obeys_only_its_own_pages() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "", "").await;
    let base = server.agent.portal_base();
    let port = base.rsplit(':').next().unwrap().to_owned();
    let version = || std::fs::read_to_string(server.module.join("version.txt")).unwrap();

    // Nobody who has not proved to administer the server changes anything:
    // neither a form nor the API, whatever they carry.
    let stranger = reqwest::Client::new();
    let token = server
        .agent
        .portal()
        .await
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let unsigned_form = stranger
        .post(format!("{base}/install/ecommerce"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned_form.status(), 401);
    let page = unsigned_form.text().await.unwrap();
    assert!(page.contains("flotilla-agent portal-link"), "{page}");
    let unsigned_json = stranger
        .post(format!("{base}/api/modules/ecommerce/install"))
        .bearer_auth("guessed")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned_json.status(), 401);
    let forged_link = stranger
        .get(format!("{base}/login?code=guessed"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged_link.status(), 403);
    let home = stranger
        .get(&base)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains("id=\"sign-in-notice\""), "{home}");

    // A browser signed in with a one-time link: what other pages can make
    // it send is still refused.
    let client = server.agent.portal_signed_in().await;
    let home = client
        .get(&base)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains("id=\"signed-in\""), "{home}");

    // Every answer forbids framing and anything but its own scripts.
    let page = client.get(&base).send().await.unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    // Referrers stay on the portal; its own forms still name their origin.
    assert_eq!(page.headers()["referrer-policy"], "same-origin");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("frame-ancestors 'none'") && policy.contains("script-src 'self'"),
        "{policy}"
    );

    // What another web page can make a browser send, each refused.
    let cross_site_form = client
        .post(format!("{base}/install/ecommerce"))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site_form.status(), 403);
    let tokenless_form = client
        .post(format!("{base}/rollback/ecommerce?to=1.0.0"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=guessed")
        .send()
        .await
        .unwrap();
    assert_eq!(tokenless_form.status(), 403);
    // fetch(…, {mode: "no-cors"}): no body, no JSON.
    let no_cors = client
        .post(format!("{base}/api/modules/ecommerce/install"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_cors.status(), 415);
    let other_origin_json = client
        .post(format!("{base}/api/modules/ecommerce/install"))
        .header("origin", "http://evil.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(other_origin_json.status(), 403);
    // DNS rebinding: the right address under another name.
    let rebound = client
        .get(&base)
        .header("host", format!("rebind.evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    // A person gets a page that says why and what to do; the API, JSON.
    let body = rebound.text().await.unwrap();
    assert!(
        body.contains("not to the host name &quot;rebind.evil.example:")
            && body.contains("id=\"what-to-do\""),
        "{body}"
    );
    let rebound_api = client
        .get(format!("{base}/api/modules/ecommerce/install"))
        .header("host", format!("rebind.evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound_api.status(), 403);
    let body: Value = rebound_api.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("rebind.evil.example"),
        "{body}"
    );
    // Even with the portal's token, a browser's post from another site.
    let cross_site_with_token = client
        .post(format!("{base}/install/ecommerce"))
        .header("sec-fetch-site", "cross-site")
        .header("origin", "null")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site_with_token.status(), 403);
    // An opaque origin may not use the JSON API.
    let null_origin_json = client
        .post(format!("{base}/api/modules/ecommerce/install"))
        .header("origin", "null")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(null_origin_json.status(), 403);
    assert_eq!(version().trim(), "1.0.0", "nothing was installed");
    assert!(server.agent.log().contains("portal request refused"));

    // The portal's own form works with its token, even when the browser
    // withholds the page's origin (Origin: null) or sends none.
    let installed = client
        .post(format!("{base}/install/ecommerce"))
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={token}"))
        .send()
        .await
        .unwrap();
    assert!(installed.status().is_success(), "{}", installed.status());
    let status_url = format!("{base}/api/modules/ecommerce/install");
    let status = finished(&client, &status_url).await;
    assert_eq!(status["result"]["ok"], true, "{status}");
    assert_eq!(version().trim(), "2.0.0");
    let local = client
        .get(&base)
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 200);
}

#[tokio::test]
async fn unsigned_packages_install_only_when_allowed_and_never_ahead_of_a_signed_one() {
    let dir = tempfile::tempdir().unwrap();
    let controller_dir = dir.path().join("controller");
    std::fs::create_dir_all(&controller_dir).unwrap();
    let controller = Controller::start(&controller_dir).await;
    let server = server_of(
        dir.path(),
        &controller.grpc_url,
        "",
        "allow_unsigned_local_packages = true",
    )
    .await;
    // An unsigned 3.0.0 dropped by hand, beside the signed 2.0.0.
    let unsigned = server
        .agent
        .data
        .join("bin/updates/packages/ecommerce-3.0.0.zip");
    build::from_entries(
        &unsigned,
        "module = \"ecommerce\"\nversion = \"3.0.0\"\nkind = \"web\"\n",
        &[
            ("index.html", b"<h1>shop v3, unsigned</h1>"),
            ("version.txt", b"3.0.0\n"),
        ],
    )
    .unwrap();
    std::fs::write(
        format!("{}.sha256", unsigned.display()),
        sha256_file(&unsigned).unwrap(),
    )
    .unwrap();
    controller
        .wait_for_server("web-01", "the signed 2.0.0 pending", |s| {
            module(s, "ecommerce")["pending_version"] == "2.0.0"
        })
        .await;
    let first = server.install().await;
    assert_eq!(first["result"]["ok"], true, "{first}");
    assert_eq!(first["result"]["to"], "2.0.0", "{first}");
    assert!(
        event_texts(&first)
            .iter()
            .any(|t| t.starts_with("signature verified: publisher key ")),
        "{first}"
    );

    // With no signed package newer, the unsigned one is next, allowed by
    // the configuration, and its install says so.
    controller
        .wait_for_server("web-01", "the unsigned 3.0.0 pending", |s| {
            module(s, "ecommerce")["pending_version"] == "3.0.0"
        })
        .await;
    let second = server.install().await;
    assert_eq!(second["result"]["ok"], true, "{second}");
    let warning = second["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "warning")
        .map(|e| e["text"].as_str().unwrap().to_owned());
    assert_eq!(
        warning.as_deref(),
        Some("unsigned package, installed because allow_unsigned_local_packages = true"),
        "{second}"
    );

    // The controller names packages by sha256 only, never by a path.
    let order = format!(
        "{}/api/v1/servers/web-01/modules/ecommerce/install",
        controller.http_url
    );
    for body in [
        json!({"package": "../../../../etc/hostname", "sha256": "0".repeat(64)}),
        json!({"sha256": "../../etc/hostname"}),
    ] {
        let status = flotilla_tests::http()
            .post(&order)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert!((400..500).contains(&status), "{body}: {status}");
    }
}
