//! Hook scripts: `<data>/bin/updates/scripts/<PHASE>_<module>.<ext>` or
//! `<PHASE>-<module>.<ext>`, run at each install phase with the procedure's
//! environment (`E_MODULE_PATH`, `E_BACKUP_PATH`, both ending with the path
//! separator) plus `E_MODULE`, `E_PHASE`, `E_FROM_VERSION`, `E_TO_VERSION`.
//! Output is streamed line by line; a non-zero exit or a timeout fails the
//! install.

use std::fmt;
use std::path::{MAIN_SEPARATOR, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The install phases, in the procedure's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    StartUpdate,
    PreBackup,
    PostBackup,
    PreInstall,
    PostInstall,
    EndUpdate,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::StartUpdate,
        Phase::PreBackup,
        Phase::PostBackup,
        Phase::PreInstall,
        Phase::PostInstall,
        Phase::EndUpdate,
    ];

    /// The name as the procedure writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::StartUpdate => "STARTUPDATE",
            Phase::PreBackup => "PREBACKUP",
            Phase::PostBackup => "POSTBACKUP",
            Phase::PreInstall => "PREINSTALL",
            Phase::PostInstall => "POSTINSTALL",
            Phase::EndUpdate => "ENDUPDATE",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The hooks for a phase and module, `_` before `-`, then by name: regular
/// files of the scripts folder itself, never a link to elsewhere.
pub fn find(scripts: &Path, phase: Phase, module: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(scripts) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| entry.path())
        .filter(|path| {
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                return false;
            };
            [format!("{phase}_{module}"), format!("{phase}-{module}")]
                .iter()
                .any(|name| stem.eq_ignore_ascii_case(name))
        })
        .collect();
    found.sort_by_key(|path| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (name.contains('-'), name)
    });
    found
}

/// What a hook is told.
#[derive(Debug, Clone)]
pub struct HookEnv {
    pub module: String,
    pub module_path: PathBuf,
    pub backup_path: PathBuf,
    pub from_version: String,
    pub to_version: String,
    /// The PowerShell `.ps1` hooks run with; by default Windows PowerShell
    /// (`powershell.exe`) on Windows, `pwsh` elsewhere.
    pub powershell: Option<PathBuf>,
}

/// How a `.ps1` hook is run: no profile, never waiting for input, whatever
/// the machine's execution policy; the script's exit code is PowerShell's.
pub const POWERSHELL_ARGS: [&str; 5] = [
    "-NoProfile",
    "-NonInteractive",
    "-ExecutionPolicy",
    "Bypass",
    "-File",
];

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A hook that failed, with what it said on stderr.
#[derive(Debug, Clone, thiserror::Error)]
#[error("hook {script} {why}{}", stderr_tail(.stderr))]
pub struct HookError {
    pub script: String,
    pub why: String,
    /// The last lines the hook wrote to stderr.
    pub stderr: Vec<String>,
}

fn stderr_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; stderr: {}", lines.join(" | "))
    }
}

/// A path as hooks see it: ending with the separator.
pub fn with_separator(path: &Path) -> String {
    let mut text = path.display().to_string();
    // Either separator counts on Windows: `C:/Sites/x/` already ends with one.
    if !text.ends_with(std::path::is_separator) {
        text.push(MAIN_SEPARATOR);
    }
    text
}

/// Why this server cannot run the hook `script` (an extension it cannot
/// run, PowerShell missing); `None` when it can.
pub fn unrunnable(script: &Path, powershell: Option<&Path>) -> Option<String> {
    command_for(script, powershell).err()
}

/// How to run a script, from its extension.
fn command_for(script: &Path, powershell: Option<&Path>) -> Result<Command, String> {
    let extension = script
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match extension.as_str() {
        "ps1" => {
            let shell = match powershell {
                Some(configured) => configured,
                None if cfg!(windows) => Path::new("powershell.exe"),
                None if find_in_path("pwsh") => Path::new("pwsh"),
                None => {
                    return Err(
                        "is a PowerShell script but PowerShell (pwsh) is not installed on this server (or set `powershell` in the agent's configuration)"
                            .into(),
                    );
                }
            };
            let mut command = Command::new(shell);
            command.args(POWERSHELL_ARGS).arg(script);
            Ok(command)
        }
        "sh" if cfg!(unix) => {
            let mut command = Command::new("sh");
            command.arg(script);
            Ok(command)
        }
        "cmd" | "bat" if cfg!(windows) => {
            let mut command = Command::new("cmd.exe");
            command.arg("/C").arg(script);
            Ok(command)
        }
        other => Err(format!(
            "has an extension (.{other}) this server cannot run"
        )),
    }
}

fn find_in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Runs one hook; every output line goes to `on_line` as it comes.
pub async fn run(
    script: &Path,
    phase: Phase,
    env: &HookEnv,
    timeout: Duration,
    mut on_line: impl FnMut(Stream, String),
) -> Result<(), HookError> {
    let name = script.display().to_string();
    let fail = |why: String, stderr: Vec<String>| HookError {
        script: name.clone(),
        why,
        stderr,
    };
    let mut command =
        command_for(script, env.powershell.as_deref()).map_err(|why| fail(why, Vec::new()))?;
    command
        .env("E_MODULE_PATH", with_separator(&env.module_path))
        .env("E_BACKUP_PATH", with_separator(&env.backup_path))
        .env("E_MODULE", &env.module)
        .env("E_PHASE", phase.as_str())
        .env("E_FROM_VERSION", &env.from_version)
        .env("E_TO_VERSION", &env.to_version)
        .current_dir(script.parent().unwrap_or(Path::new(".")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so a timeout stops whatever the script started.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| fail(format!("could not start: {e}"), Vec::new()))?;
    // On Windows, the hook's tree in a job, so a timeout ends all of it.
    #[cfg(windows)]
    let tree = super::platform::ProcessTree::holding(&child);
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    // Raw bytes up to each newline: what a hook prints never stops the
    // reading (a code-page "é" is not UTF-8), so its pipes never fill.
    let (mut out_line, mut err_line) = (Vec::new(), Vec::new());
    let mut stderr_seen: Vec<String> = Vec::new();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        tokio::select! {
            // A read cut short by the other branch keeps its bytes in the
            // buffer: at the end, what is left there is the last line.
            read = stdout.read_until(b'\n', &mut out_line), if out_open => {
                out_open = matches!(read, Ok(n) if n > 0);
                if !out_line.is_empty() {
                    on_line(Stream::Stdout, take_line(&mut out_line));
                }
            }
            read = stderr.read_until(b'\n', &mut err_line), if err_open => {
                err_open = matches!(read, Ok(n) if n > 0);
                if !err_line.is_empty() {
                    let line = take_line(&mut err_line);
                    stderr_seen.push(line.clone());
                    if stderr_seen.len() > 20 {
                        stderr_seen.remove(0);
                    }
                    on_line(Stream::Stderr, line);
                }
            }
            _ = &mut deadline => {
                #[cfg(windows)]
                if let Some(tree) = &tree {
                    tree.kill();
                }
                stop(&mut child).await;
                return Err(fail(format!("timed out after {} s and was stopped", timeout.as_secs()), stderr_seen));
            }
        }
    }
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| fail(e.to_string(), stderr_seen.clone()))?,
        _ = &mut deadline => {
            #[cfg(windows)]
            if let Some(tree) = &tree {
                tree.kill();
            }
            stop(&mut child).await;
            return Err(fail(format!("timed out after {} s and was stopped", timeout.as_secs()), stderr_seen));
        }
    };
    #[cfg(windows)]
    if let Some(tree) = tree {
        tree.release();
    }
    if status.success() {
        Ok(())
    } else {
        let code = status
            .code()
            .map_or_else(|| "a signal".to_owned(), |c| c.to_string());
        Err(fail(format!("exited with {code}"), stderr_seen))
    }
}

/// A line read as bytes, as text without its line ending; the buffer is
/// emptied for the next line.
fn take_line(buffer: &mut Vec<u8>) -> String {
    let mut end = buffer.len();
    while end > 0 && matches!(buffer[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    let line = super::platform::decode_output(&buffer[..end]);
    buffer.clear();
    line
}

/// Stops a hook and, on Unix, every process of its group.
async fn stop(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{pid}"))
            .status()
            .await;
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_both_separators_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "PREINSTALL-ecommerce.sh",
            "PREINSTALL_ecommerce.ps1",
            "PREINSTALL_ecommercex.sh",
            "POSTINSTALL_ecommerce.sh",
            "PREINSTALL_phygitalapi.sh",
        ] {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        let found: Vec<String> = find(dir.path(), Phase::PreInstall, "ecommerce")
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            found,
            ["PREINSTALL_ecommerce.ps1", "PREINSTALL-ecommerce.sh"]
        );
    }

    #[test]
    fn names_with_path_tricks_or_metacharacters_are_not_hooks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("evil.sh"), "echo evil").expect("write");
        for name in [
            "PREINSTALL_ecommerce.sh.bak",
            "PREINSTALL_ecommerce .sh",
            "PREINSTALL_ecommerce;rm -rf ~.sh",
            "PREINSTALL_ecommerce$(id).sh",
            ".PREINSTALL_ecommerce.sh",
            "PREINSTALL__ecommerce.sh",
            "PREINSTALL_..%2fecommerce.sh",
        ] {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        // A folder named like a hook, and a link to a script elsewhere.
        std::fs::create_dir(dir.path().join("PREINSTALL_ecommerce.ps1")).expect("dir");
        #[cfg(unix)]
        std::os::unix::fs::symlink(
            outside.path().join("evil.sh"),
            dir.path().join("PREINSTALL-ecommerce.sh"),
        )
        .expect("symlink");
        std::fs::write(dir.path().join("PREINSTALL_ecommerce.sh"), "").expect("write");
        let found: Vec<String> = find(dir.path(), Phase::PreInstall, "ecommerce")
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(found, ["PREINSTALL_ecommerce.sh"]);
    }

    /// The configured PowerShell is run with the procedure's flags and the
    /// script, and its exit code is the hook's. (A stand-in records what it
    /// was given: neither Linux nor Wine has a PowerShell that runs scripts.)
    #[cfg(unix)]
    #[tokio::test]
    async fn a_powershell_hook_runs_non_interactive_with_the_configured_powershell() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("PREINSTALL_x.ps1");
        std::fs::write(&script, "exit 7\n").expect("write");
        let powershell = dir.path().join("pwsh");
        std::fs::write(&powershell, "#!/bin/sh\necho \"$@\"\nexit 7\n").expect("write");
        std::fs::set_permissions(
            &powershell,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let env = HookEnv {
            powershell: Some(powershell),
            ..hook_env(dir.path())
        };
        let mut lines = Vec::new();
        let error = run(
            &script,
            Phase::PreInstall,
            &env,
            Duration::from_secs(30),
            |_, line| lines.push(line),
        )
        .await
        .expect_err("exit 7");
        assert_eq!(
            lines,
            [format!(
                "-NoProfile -NonInteractive -ExecutionPolicy Bypass -File {}",
                script.display()
            )]
        );
        assert!(error.why.contains('7'), "{}", error.why);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_timed_out_hook_is_stopped_with_what_it_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("PREINSTALL_x.sh");
        std::fs::write(&script, "sleep 299 &\nwait\n").expect("write");
        let env = HookEnv {
            module: "x".into(),
            module_path: dir.path().into(),
            backup_path: dir.path().into(),
            from_version: "1".into(),
            to_version: "2".into(),
            powershell: None,
        };
        let err = run(
            &script,
            Phase::PreInstall,
            &env,
            Duration::from_millis(500),
            |_, _| {},
        )
        .await
        .expect_err("timeout");
        assert!(err.why.contains("timed out"), "{err}");
        let pgrep = std::process::Command::new("pgrep")
            .args(["-f", "^sleep 299$"])
            .output()
            .expect("pgrep");
        assert!(
            pgrep.stdout.is_empty(),
            "the hook's children are gone: {}",
            String::from_utf8_lossy(&pgrep.stdout)
        );
    }

    /// The environment of module x's hooks, every path in `dir`.
    fn hook_env(dir: &Path) -> HookEnv {
        HookEnv {
            module: "x".into(),
            module_path: dir.into(),
            backup_path: dir.into(),
            from_version: "1".into(),
            to_version: "2".into(),
            powershell: None,
        }
    }

    #[tokio::test]
    async fn a_hook_printing_bytes_that_are_not_utf8_is_read_to_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        // "café" in a code page, then far more than a pipe holds, then a
        // last line without a newline.
        #[cfg(unix)]
        let (script, body): (&str, &[u8]) = (
            "PREINSTALL_x.sh",
            b"printf 'caf\\351\\n'\ni=0\nwhile [ $i -lt 3000 ]; do echo \"line $i of a hook that prints a lot\"; i=$((i+1)); done\nprintf 'the end'\n",
        );
        #[cfg(windows)]
        let (script, body): (&str, &[u8]) = (
            "PREINSTALL_x.cmd",
            b"@echo off\r\necho caf\xe9\r\nfor /L %%i in (1,1,3000) do echo line %%i of a hook that prints a lot\r\necho the end\r\n",
        );
        let script = dir.path().join(script);
        std::fs::write(&script, body).expect("write");
        let mut lines = Vec::new();
        run(
            &script,
            Phase::PreInstall,
            &hook_env(dir.path()),
            Duration::from_secs(60),
            |_, line| lines.push(line),
        )
        .await
        .expect("the hook runs to its end");
        assert_eq!(lines.len(), 3002, "{:?}", lines.last());
        assert!(
            lines[0].starts_with("caf") && lines[0].chars().count() == 4,
            "{:?}",
            lines[0]
        );
        // Decoded through the console's code page on Windows, not replaced.
        #[cfg(windows)]
        assert!(!lines[0].contains('\u{FFFD}'), "{:?}", lines[0]);
        assert_eq!(lines[3001].trim_end(), "the end");
    }

    #[cfg(windows)]
    #[tokio::test]
    async fn a_timed_out_hook_ends_with_everything_it_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tick = dir.path().join("tick.txt");
        let script = dir.path().join("PREINSTALL_x.cmd");
        // A child that appends to tick.txt for ever, and a hook that waits.
        let body = format!(
            "@echo off\r\nstart \"\" /b cmd /c \"for /L %%i in (1,0,2) do @echo x>>\"{}\"\"\r\nfor /L %%i in (1,0,2) do @rem\r\n",
            tick.display()
        );
        std::fs::write(&script, body).expect("write");
        let err = run(
            &script,
            Phase::PreInstall,
            &hook_env(dir.path()),
            Duration::from_secs(3),
            |_, _| {},
        )
        .await
        .expect_err("timeout");
        assert!(err.why.contains("timed out"), "{err}");
        let size = || std::fs::metadata(&tick).map(|m| m.len()).unwrap_or(0);
        let before = size();
        assert!(before > 0, "the child ran before the timeout");
        // Nothing to wait for: the check is that nothing happens any more.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            size(),
            before,
            "the hook's child still writes after the timeout"
        );
    }

    #[test]
    fn paths_end_with_one_separator() {
        // No separator: the platform's is added.
        assert_eq!(
            with_separator(Path::new("/srv/ecommerce")),
            format!("/srv/ecommerce{MAIN_SEPARATOR}")
        );
        // One already there, of either kind where both count: kept as is.
        assert_eq!(
            with_separator(Path::new("/srv/ecommerce/")),
            "/srv/ecommerce/"
        );
        let native = format!("ecommerce{MAIN_SEPARATOR}");
        assert_eq!(with_separator(Path::new(&native)), native);
        #[cfg(windows)]
        {
            assert_eq!(with_separator(Path::new(r"C:\Sites\x")), r"C:\Sites\x\");
            assert_eq!(with_separator(Path::new("C:/Sites/x/")), "C:/Sites/x/");
        }
    }
}
