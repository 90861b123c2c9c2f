//! The code's own rules, checked on its source like rust-analyzer's tidy
//! tests: where wire types may appear, where SQL lives, that the REST
//! handlers depend on the domain and never the other way, that the agent's
//! modules depend one way, and that no file grows past what a reader holds.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file under `dir`, relative to the workspace's root, with its text.
fn sources(dir: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut stack = vec![root().join(dir)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path
                    .strip_prefix(root())
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                found.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    found.sort();
    found
}

/// The files of `dir` whose code (comments left out) contains `needle`.
fn using(dir: &str, needle: &str) -> Vec<String> {
    sources(dir)
        .into_iter()
        .filter(|(_, text)| {
            text.lines()
                .map(str::trim_start)
                .filter(|line| !line.starts_with("//"))
                .any(|line| line.contains(needle))
        })
        .map(|(path, _)| path)
        .collect()
}

#[test]
fn only_proto_and_the_two_adapters_see_wire_types() {
    let mut seen = using("agent/src", "v1::");
    seen.extend(using("controller/src", "v1::"));
    assert_eq!(
        seen,
        ["agent/src/link.rs", "controller/src/grpc.rs"],
        "wire types (flotilla_proto::v1) belong to the proto crate and the two adapters; convert through flotilla_proto::convert"
    );
}

#[test]
fn all_of_the_controllers_sql_is_in_its_db_module() {
    let outside: Vec<String> = ["sqlx::query", "sqlx::raw_sql"]
        .iter()
        .flat_map(|needle| using("controller/src", needle))
        .filter(|path| !path.starts_with("controller/src/db/"))
        .collect();
    assert!(
        outside.is_empty(),
        "SQL outside controller/src/db: {outside:?}"
    );
}

#[test]
fn nothing_outside_the_rest_api_depends_on_it() {
    let outside: Vec<String> = using("controller/src", "crate::api")
        .into_iter()
        .filter(|path| {
            !path.starts_with("controller/src/api/")
                // The router is mounted by run; the dashboard's guard
                // answers in the API's error shape.
                && path != "controller/src/lib.rs"
                && path != "controller/src/dashboard.rs"
        })
        .collect();
    assert!(
        outside.is_empty(),
        "these depend on the REST API, which must depend on them instead: {outside:?}"
    );
}

#[test]
fn the_agents_modules_depend_one_way() {
    // Lower modules never reach up: installs -> databases -> inventory ->
    // pending -> install, and the shared state holds only data. The link
    // and the portal run the doctor, which never reaches back into them
    // (it dials the controller through dial, escapes through html). A rule
    // about a folder (ending in `/`) holds for every file in it.
    let rules = [
        ("agent/src/databases/mod.rs", "crate::installs"),
        ("agent/src/databases/installs.rs", "crate::installs"),
        ("agent/src/inventory.rs", "crate::installs"),
        ("agent/src/inventory.rs", "crate::databases"),
        ("agent/src/inventory.rs", "crate::state"),
        ("agent/src/pending.rs", "crate::installs"),
        ("agent/src/pending.rs", "crate::inventory"),
        ("agent/src/pending.rs", "crate::state"),
        ("agent/src/state.rs", "crate::installs"),
        ("agent/src/state.rs", "crate::downloads"),
        ("agent/src/state.rs", "crate::link"),
        ("agent/src/state.rs", "crate::self_update"),
        // The install of the agent's module goes down to its self-update,
        // which never reaches back.
        ("agent/src/self_update/", "crate::installs"),
        ("agent/src/identity.rs", "crate::link"),
        ("agent/src/doctor/", "crate::link"),
        ("agent/src/doctor/", "crate::portal"),
    ];
    // A rule about a file or folder that no longer exists guards nothing.
    let gone: Vec<&str> = rules
        .iter()
        .map(|(file, _)| *file)
        .filter(|file| !root().join(file).exists())
        .collect();
    assert!(
        gone.is_empty(),
        "rules about files that do not exist: {gone:?}"
    );
    let broken: Vec<String> = rules
        .iter()
        .flat_map(|(file, needle)| {
            using("agent/src", needle)
                .into_iter()
                .filter(move |f| f == file || (file.ends_with('/') && f.starts_with(file)))
                .map(move |f| format!("{f} uses {needle}"))
        })
        .collect();
    assert!(broken.is_empty(), "{broken:?}");
}

#[test]
fn no_source_file_outside_the_tests_is_over_800_lines() {
    let long: Vec<String> = ["proto/src", "agent/src", "controller/src"]
        .iter()
        .flat_map(|dir| sources(dir))
        .filter(|(_, text)| text.lines().count() > 800)
        .map(|(path, text)| format!("{path}: {} lines", text.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these by what they do: {long:?}");
}
