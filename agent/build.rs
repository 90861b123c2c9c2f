//! The version the agent reports (its Hello, `status.xml`, `--version`):
//! `FLOTILLA_BUILD_VERSION` when set while compiling, else the crate's. A
//! release build, a test, or anyone can so build "the next version" of the
//! same code.

fn main() {
    println!("cargo:rerun-if-env-changed=FLOTILLA_BUILD_VERSION");
    let version = match std::env::var("FLOTILLA_BUILD_VERSION") {
        Ok(version) if !version.trim().is_empty() => version.trim().to_owned(),
        _ => std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION"),
    };
    let numbers = version.split(['-', '+']).next().unwrap_or("");
    let well_formed = numbers.split('.').count() >= 2
        && numbers
            .split('.')
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    assert!(
        well_formed,
        "FLOTILLA_BUILD_VERSION={version:?} is not a version such as 1.4.0"
    );
    println!("cargo:rustc-env=FLOTILLA_AGENT_VERSION={version}");
}
