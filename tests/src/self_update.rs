//! An agent that updates itself, for the tests and the figures: this code
//! built as the next version (`FLOTILLA_BUILD_VERSION`), packaged as the
//! module `flotilla-agent`, and an agent run as its service runs it.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::{Agent, Controller};
use flotilla_agent::install::package::build;

/// The version the next build reports.
pub const NEXT: &str = "9.9.0";

/// This code built as version [`NEXT`] (`FLOTILLA_BUILD_VERSION`), in the
/// profile of the running build (debug for the tests, release for the
/// figures), in a target folder of its own beside the workspace's.
pub fn next_agent() -> PathBuf {
    let current = crate::binary("flotilla-agent");
    let profile = current.parent().unwrap();
    let release = profile.file_name().is_some_and(|name| name == "release");
    let target = profile.parent().unwrap().join("agent-next");
    let built = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "flotilla-agent",
            "--bin",
            "flotilla-agent",
        ])
        .args(release.then_some("--release"))
        .arg("--target-dir")
        .arg(&target)
        .env("FLOTILLA_BUILD_VERSION", NEXT)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(built.success(), "building the next version of the agent");
    target
        .join(if release { "release" } else { "debug" })
        .join("flotilla-agent")
}

/// A signed package of the module flotilla-agent at `version` holding
/// `exe` as its executable, put in the agent's packages folder; its sha256.
pub fn package_agent(agent: &Agent, dir: &Path, version: &str, exe: &Path) -> String {
    let packages = agent.data.join("bin/updates/packages");
    crate::sign_beside(&agent_package(dir, &packages, version, exe))
}

/// Builds the package of the module flotilla-agent at `version` holding
/// `exe`, for this platform, into `out` (staged under `dir`); its path.
pub fn agent_package(dir: &Path, out: &Path, version: &str, exe: &Path) -> PathBuf {
    agent_package_for(&flotilla_proto::domain::platform(), dir, out, version, exe)
}

/// [`agent_package`] built for `platform` (`windows-x86_64` holds
/// `flotilla-agent.exe`).
pub fn agent_package_for(
    platform: &str,
    dir: &Path,
    out: &Path,
    version: &str,
    exe: &Path,
) -> PathBuf {
    let folder = dir.join(format!("agent-{version}-{platform}"));
    std::fs::create_dir_all(&folder).unwrap();
    let name = match platform.starts_with("windows") {
        true => "flotilla-agent.exe",
        false => "flotilla-agent",
    };
    std::fs::copy(exe, folder.join(name)).unwrap();
    std::fs::create_dir_all(out).unwrap();
    let package = match platform == flotilla_proto::domain::platform() {
        true => out.join(format!("flotilla-agent-{version}.zip")),
        false => out.join(format!("flotilla-agent-{version}-{platform}.zip")),
    };
    build::from_folder(
        &package,
        &format!(
            "module = \"flotilla-agent\"\nversion = \"{version}\"\nkind = \"agent\"\nplatform = \"{platform}\"\n"
        ),
        &folder,
    )
    .unwrap();
    package
}

/// A shell script posing as the agent `version`: it answers `--version`
/// as that version would, then runs `then`.
pub fn script_agent(dir: &Path, version: &str, then: &str) -> PathBuf {
    let path = dir.join(format!("script-{version}"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'flotilla-agent {version}'; exit 0; fi\n{then}\n"
        ),
    )
    .unwrap();
    path
}

/// An agent of site `acme` on `controller`, run as its service would: from
/// `<data>/bin/agent/current`, adopted by `service install`; the trial's
/// budget and settle time short.
pub async fn managed_agent(dir: &Path, controller: &Controller) -> Agent {
    managed_agent_named(dir, controller, "web-01").await
}

/// Like [`managed_agent`], for server `id`.
pub async fn managed_agent_named(dir: &Path, controller: &Controller, id: &str) -> Agent {
    managed_agent_with(dir, controller, id, "<applications/>").await
}

/// Like [`managed_agent_named`], with `applications_xml` (see
/// [`crate::sites::applications`]).
pub async fn managed_agent_with(
    dir: &Path,
    controller: &Controller,
    id: &str,
    applications_xml: &str,
) -> Agent {
    let mut agent = Agent::launch_with(
        dir,
        "acme",
        id,
        &controller.grpc_url,
        applications_xml,
        100,
        &format!(
            "{}\nupdate_budget_seconds = 8\nupdate_settle_seconds = 2\n",
            crate::trusted_publisher()
        ),
    )
    .await;
    let installed = std::process::Command::new(crate::binary("flotilla-agent"))
        .arg("--config")
        .arg(agent.data.join("agent.toml"))
        .args(["service", "install", "--unit-dir"])
        .arg(dir.join(id).join("units"))
        .output()
        .unwrap();
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let current = agent.data.join("bin/agent/current/flotilla-agent");
    agent.relaunch_from(&current, &[]).await;
    controller
        .wait_for_server(id, "online", |s| s["online"] == true)
        .await;
    agent
}

/// Asks the agent's portal to install the agent package `sha256`.
pub async fn update(agent: &Agent, sha256: &str) {
    let response = agent
        .portal_http()
        .post(format!(
            "{}/api/modules/flotilla-agent/install",
            agent.portal_base()
        ))
        .json(&json!({"sha256": sha256}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(status, 202, "{}", response.text().await.unwrap());
}

/// The version `<data>/bin/agent/current` points to.
pub fn current(agent: &Agent) -> String {
    std::fs::read_link(agent.data.join("bin/agent/current"))
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}
