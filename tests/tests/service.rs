//! The agent and the controller as Linux services: the systemd units
//! `service install` writes, accepted by `systemd-analyze verify` without a
//! warning, and removed by `service uninstall`. systemd does not run on the
//! test machines, so nothing here enables or starts a unit. (The Windows
//! service runs under Wine's service manager: `tests/tests/wine.rs`.)

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use flotilla_tests::binary;

/// Runs a binary; (success, stdout and stderr).
fn run(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(binary(program)).args(args).output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

use flotilla_tests::systemd_verify as verify;

#[test]
fn the_agent_installs_as_a_systemd_unit_that_lets_its_hooks_work() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent config.toml");
    let units = dir.path().join("units");
    let units_arg = units.to_str().unwrap();
    let config_arg = config.to_str().unwrap();

    // A configuration that does not load is refused, and nothing is written.
    std::fs::write(&config, "site = \"acme\"\n").unwrap();
    let (ok, said) = run(
        "flotilla-agent",
        &[
            "--config",
            config_arg,
            "service",
            "install",
            "--unit-dir",
            units_arg,
        ],
    );
    assert!(!ok && said.contains("controller_url"), "{said}");
    assert!(!units.exists());

    std::fs::write(
        &config,
        format!(
            "site = \"acme\"\nserver_id = \"web-01\"\ndata_dir = {:?}\ncontroller_url = \"http://127.0.0.1:9\"\ninsecure_plaintext = true\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let (ok, said) = run(
        "flotilla-agent",
        &[
            "--config",
            config_arg,
            "service",
            "install",
            "--unit-dir",
            units_arg,
        ],
    );
    let unit_file = units.join("flotilla-agent.service");
    assert!(ok, "{said}");
    assert!(
        said.contains(&format!("{} written", unit_file.display())),
        "{said}"
    );
    let unit = std::fs::read_to_string(&unit_file).unwrap();
    let line = |key: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .collect()
    };
    // The service runs the agent through its versions' link, so that it
    // can update itself; this build was copied in as its version.
    let agent_home = dir.path().join("data").join("bin").join("agent");
    assert_eq!(
        line("ExecStart"),
        [format!(
            "{} run --config \"{}\"",
            agent_home.join("current").join("flotilla-agent").display(),
            config.display()
        )
        .as_str()],
        "the path with a space is quoted"
    );
    let adopted = agent_home
        .join("versions")
        .join(env!("CARGO_PKG_VERSION"))
        .join("flotilla-agent");
    assert_eq!(
        std::fs::read(&adopted).unwrap(),
        std::fs::read(binary("flotilla-agent")).unwrap(),
        "{} is this build",
        adopted.display()
    );
    assert_eq!(
        std::fs::read_link(agent_home.join("current")).unwrap(),
        Path::new("versions").join(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(line("Restart"), ["on-failure"]);
    assert_eq!(
        line("KillMode"),
        ["mixed"],
        "hooks are not killed before the agent decides"
    );
    assert_eq!(line("WantedBy"), ["multi-user.target"]);
    for blocks_hooks in [
        "ProtectSystem",
        "ProtectHome",
        "NoNewPrivileges",
        "ReadOnlyPaths",
    ] {
        assert!(
            line(blocks_hooks).is_empty(),
            "{blocks_hooks} would stop hooks: {unit}"
        );
    }
    verify(&unit_file);

    let (ok, said) = run(
        "flotilla-agent",
        &[
            "--config",
            config_arg,
            "service",
            "uninstall",
            "--unit-dir",
            units_arg,
        ],
    );
    assert!(ok, "{said}");
    assert!(!unit_file.exists());
    let (ok, said) = run(
        "flotilla-agent",
        &[
            "--config",
            config_arg,
            "service",
            "uninstall",
            "--unit-dir",
            units_arg,
        ],
    );
    assert!(!ok && said.contains("not installed"), "{said}");
}

#[test]
fn the_controller_installs_as_a_hardened_systemd_unit_with_its_serve_options() {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    let db = dir.path().join("fleet").join("controller.db");
    let (ok, said) = run(
        "flotilla-controller",
        &[
            "--db",
            db.to_str().unwrap(),
            "--http-listen",
            "0.0.0.0:8443",
            "service",
            "install",
            "--unit-dir",
            units.to_str().unwrap(),
        ],
    );
    assert!(ok, "{said}");
    let unit_file = units.join("flotilla-controller.service");
    let unit = std::fs::read_to_string(&unit_file).unwrap();
    assert!(
        unit.contains(&format!(
            "\nExecStart={} serve --db {} --http-listen 0.0.0.0:8443\n",
            binary("flotilla-controller").display(),
            db.display()
        )),
        "{unit}"
    );
    assert!(unit.contains("\nProtectSystem=strict\n"), "{unit}");
    assert!(
        unit.contains(&format!(
            "\nReadWritePaths=-{}\n",
            db.parent().unwrap().display()
        )),
        "it may write its database's folder: {unit}"
    );
    assert!(unit.contains("\nNoNewPrivileges=yes\n"), "{unit}");
    verify(&unit_file);

    // A relative path would be read from wherever systemd starts it.
    let (ok, said) = run(
        "flotilla-controller",
        &[
            "--db",
            "fleet.db",
            "service",
            "install",
            "--unit-dir",
            units.to_str().unwrap(),
        ],
    );
    assert!(!ok && said.contains("fleet.db is relative"), "{said}");
}
