//! The small platform interface an install needs: who holds files in a
//! folder, and how to stop and start a module's service or application pool.
//! Linux reads `/proc` and uses `systemctl`; Windows uses `sc.exe` and IIS's
//! `appcmd.exe`. A module may instead name its own stop and start commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// A process holding a file, or its working directory, in a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub executable: String,
    pub user: String,
    /// The first path it holds there.
    pub path: PathBuf,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ({}, user {}) holds {}",
            self.pid,
            self.executable,
            self.user,
            self.path.display()
        )
    }
}

/// The processes (other than this one) holding files or their working
/// directory under `dir`.
#[cfg(target_os = "linux")]
pub fn holders(dir: &Path) -> Result<Vec<Holder>, String> {
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let me = std::process::id();
    let users = users();
    let mut found = Vec::new();
    let proc_entries = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
    for entry in proc_entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let base = entry.path();
        let mut held = std::fs::read_link(base.join("cwd"))
            .ok()
            .filter(|p| p.starts_with(&dir));
        if held.is_none()
            && let Ok(fds) = std::fs::read_dir(base.join("fd"))
        {
            held = fds
                .filter_map(Result::ok)
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .find(|target| target.starts_with(&dir));
        }
        let Some(path) = held else { continue };
        let executable = std::fs::read_link(base.join("exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "?".into());
        let uid = std::fs::read_to_string(base.join("status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next().map(str::to_owned))
            });
        let user = uid
            .map(|uid| {
                users
                    .iter()
                    .find(|(id, _)| *id == uid)
                    .map_or(uid.clone(), |(_, name)| name.clone())
            })
            .unwrap_or_else(|| "?".into());
        found.push(Holder {
            pid,
            executable,
            user,
            path,
        });
    }
    found.sort_by_key(|h| h.pid);
    Ok(found)
}

#[cfg(target_os = "linux")]
fn users() -> Vec<(String, String)> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?;
            Some((uid.to_owned(), name.to_owned()))
        })
        .collect()
}

/// Windows: asks the Restart Manager which processes hold the files under
/// `dir` (`RmStartSession`, `RmRegisterResources`, `RmGetList`).
#[cfg(windows)]
pub fn holders(dir: &Path) -> Result<Vec<Holder>, String> {
    let mut files = Vec::new();
    collect_files(dir, &mut files, 20_000);
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let found = restart_manager::processes_holding(&files)?;
    Ok(found
        .into_iter()
        .map(|(pid, application, path)| Holder {
            pid,
            executable: application,
            user: "?".into(),
            path: path.unwrap_or_else(|| dir.to_path_buf()),
        })
        .collect())
}

#[cfg(windows)]
fn collect_files(dir: &Path, files: &mut Vec<PathBuf>, limit: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if files.len() >= limit {
            return;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect_files(&entry.path(), files, limit),
            Ok(_) => files.push(entry.path()),
            Err(_) => {}
        }
    }
}

/// What a program printed, as text: UTF-8 when it is; on Windows, else the
/// OEM code page `cmd.exe` and console programs write through a pipe (a
/// French server's "é"); else UTF-8 with replacement characters. Never an
/// error: a hook's output is shown, whatever its bytes.
pub fn decode_output(bytes: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.to_owned();
    }
    #[cfg(windows)]
    if let Some(text) = code_page::oem_to_string(bytes) {
        return text;
    }
    String::from_utf8_lossy(bytes).into_owned()
}

/// A hook's whole process tree on Windows: a Job Object the hook is put in
/// as soon as it starts, which every process it starts joins. On a timeout
/// [`ProcessTree::kill`] ends them all, as the process group does on Linux;
/// if the agent itself dies, closing the job ends them too
/// (kill-on-close). A hook that ends by itself leaves what it started
/// running, as on Linux.
#[cfg(windows)]
#[derive(Debug)]
pub struct ProcessTree(job::Job);

#[cfg(windows)]
impl ProcessTree {
    /// Puts `child` in a new job; `None` (logged) when Windows refuses.
    pub fn holding(child: &tokio::process::Child) -> Option<ProcessTree> {
        let process = child.raw_handle()?;
        match job::Job::new().and_then(|job| job.assign(process).map(|()| job)) {
            Ok(job) => Some(ProcessTree(job)),
            Err(e) => {
                tracing::warn!(
                    "cannot put a child process in a job object; ending it ends only the process itself: {e}"
                );
                None
            }
        }
    }

    /// Ends every process of the tree.
    pub fn kill(&self) {
        self.0.terminate();
    }

    /// The hook ended by itself: what it started keeps running.
    pub fn release(self) {
        self.0.keep_on_close();
    }
}

/// The Job Object calls.
#[cfg(windows)]
#[allow(unsafe_code)] // FFI to kernel32's job objects; see the module comment
mod job {
    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
    use windows_sys::Win32::System::JobObjects::{
        AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
        JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation,
        SetInformationJobObject, TerminateJobObject,
    };

    /// A job's handle, closed when dropped. Kept as an address so the
    /// hook's future stays `Send`; only this module turns it into a handle.
    #[derive(Debug)]
    pub struct Job(usize);

    impl Job {
        fn handle(&self) -> HANDLE {
            self.0 as HANDLE
        }

        /// A new, unnamed job whose processes end when it is closed.
        pub fn new() -> Result<Job, String> {
            // SAFETY: null attributes and name are allowed: an unnamed job
            // with the default security.
            let handle = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
            if handle.is_null() {
                return Err(format!(
                    "CreateJobObject failed: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let job = Job(handle as usize);
            job.limit(JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE)?;
            Ok(job)
        }

        fn limit(&self, flags: u32) -> Result<(), String> {
            // SAFETY: all-zero is a valid value of this plain C struct.
            let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
            info.BasicLimitInformation.LimitFlags = flags;
            let size = u32::try_from(std::mem::size_of_val(&info)).unwrap_or(u32::MAX);
            // SAFETY: the handle is open; `info` is valid for `size` bytes
            // and of the class named.
            let set = unsafe {
                SetInformationJobObject(
                    self.handle(),
                    JobObjectExtendedLimitInformation,
                    std::ptr::from_ref(&info).cast(),
                    size,
                )
            };
            if set == 0 {
                return Err(format!(
                    "SetInformationJobObject failed: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(())
        }

        /// Puts a process in the job.
        pub fn assign(&self, process: std::os::windows::io::RawHandle) -> Result<(), String> {
            // SAFETY: both handles are open: the job's is ours, the
            // process's belongs to a child not yet waited for.
            let assigned = unsafe { AssignProcessToJobObject(self.handle(), process as HANDLE) };
            if assigned == 0 {
                return Err(format!(
                    "AssignProcessToJobObject failed: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(())
        }

        /// Ends every process in the job.
        pub fn terminate(&self) {
            // SAFETY: the handle is open.
            unsafe {
                TerminateJobObject(self.handle(), 1);
            }
        }

        /// Closing the job no longer ends its processes.
        pub fn keep_on_close(&self) {
            let _ = self.limit(0);
        }
    }

    impl Drop for Job {
        fn drop(&mut self) {
            // SAFETY: the handle came from CreateJobObjectW and is closed
            // exactly once.
            unsafe {
                CloseHandle(self.handle());
            }
        }
    }
}

/// The OEM code page's conversion to Unicode.
#[cfg(windows)]
#[allow(unsafe_code)] // FFI to kernel32's MultiByteToWideChar; see the module comment
mod code_page {
    use windows_sys::Win32::Globalization::{GetOEMCP, MultiByteToWideChar};

    /// `bytes` in the OEM code page, as text; `None` when the conversion fails.
    pub fn oem_to_string(bytes: &[u8]) -> Option<String> {
        let length = i32::try_from(bytes.len()).ok()?;
        if length == 0 {
            return Some(String::new());
        }
        // SAFETY: takes no argument and only reads the system's setting.
        let code_page = unsafe { GetOEMCP() };
        // SAFETY: `bytes` is valid for `length` bytes; a null output with
        // size 0 asks only for the size needed.
        let needed = unsafe {
            MultiByteToWideChar(
                code_page,
                0,
                bytes.as_ptr(),
                length,
                std::ptr::null_mut(),
                0,
            )
        };
        let size = usize::try_from(needed).ok().filter(|&n| n > 0)?;
        let mut wide = vec![0u16; size];
        // SAFETY: `wide` has room for `needed` UTF-16 units, as the first
        // call said; `bytes` is valid for `length` bytes.
        let written = unsafe {
            MultiByteToWideChar(
                code_page,
                0,
                bytes.as_ptr(),
                length,
                wide.as_mut_ptr(),
                needed,
            )
        };
        let written = usize::try_from(written).ok().filter(|&n| n > 0)?;
        Some(String::from_utf16_lossy(&wide[..written]))
    }
}

/// The Restart Manager's C API. The only unsafe code in Flotilla: FFI calls
/// whose buffers are sized and owned here, and whose session is always ended.
#[cfg(windows)]
#[allow(unsafe_code)] // FFI to rstrtmgr.dll; see the module comment
mod restart_manager {
    use std::os::windows::ffi::OsStrExt;
    use std::path::PathBuf;

    use windows_sys::Win32::Foundation::{ERROR_MORE_DATA, ERROR_SUCCESS};
    use windows_sys::Win32::System::RestartManager::{
        CCH_RM_SESSION_KEY, RM_PROCESS_INFO, RmEndSession, RmGetList, RmRegisterResources,
        RmStartSession,
    };

    /// Ends the session however the caller leaves.
    struct Session(u32);

    impl Drop for Session {
        fn drop(&mut self) {
            // SAFETY: the handle came from a successful RmStartSession and is
            // ended exactly once.
            unsafe {
                RmEndSession(self.0);
            }
        }
    }

    /// The processes holding any of `files`: pid, application name, and
    /// (not reported by the Restart Manager) no precise path.
    pub fn processes_holding(
        files: &[PathBuf],
    ) -> Result<Vec<(u32, String, Option<PathBuf>)>, String> {
        let mut handle = 0u32;
        let mut key = [0u16; CCH_RM_SESSION_KEY as usize + 1];
        // SAFETY: `handle` and `key` are valid for writes; `key` has the
        // documented CCH_RM_SESSION_KEY + 1 characters.
        let started = unsafe { RmStartSession(&mut handle, 0, key.as_mut_ptr()) };
        if started != ERROR_SUCCESS {
            return Err(format!(
                "the Restart Manager could not start a session (error {started})"
            ));
        }
        let session = Session(handle);
        let wide: Vec<Vec<u16>> = files
            .iter()
            .map(|f| {
                f.as_os_str()
                    .encode_wide()
                    .chain(std::iter::once(0))
                    .collect()
            })
            .collect();
        let pointers: Vec<*const u16> = wide.iter().map(|w| w.as_ptr()).collect();
        let count = u32::try_from(pointers.len()).map_err(|_| "too many files".to_owned())?;
        // SAFETY: `pointers` holds `count` NUL-terminated UTF-16 strings that
        // outlive the call; no applications or services are registered.
        let registered = unsafe {
            RmRegisterResources(
                session.0,
                count,
                pointers.as_ptr(),
                0,
                std::ptr::null(),
                0,
                std::ptr::null(),
            )
        };
        if registered != ERROR_SUCCESS {
            return Err(format!(
                "the Restart Manager could not register the files (error {registered})"
            ));
        }
        let mut infos: Vec<RM_PROCESS_INFO> = Vec::new();
        for _ in 0..5 {
            let mut needed = 0u32;
            let mut returned = u32::try_from(infos.len()).unwrap_or(0);
            let mut reasons = 0u32;
            // SAFETY: `infos` has room for `returned` entries; the other
            // pointers are valid for writes.
            let listed = unsafe {
                RmGetList(
                    session.0,
                    &mut needed,
                    &mut returned,
                    infos.as_mut_ptr(),
                    &mut reasons,
                )
            };
            if listed == ERROR_SUCCESS {
                infos.truncate(returned as usize);
                return Ok(infos
                    .iter()
                    .map(|info| {
                        let name_end = info
                            .strAppName
                            .iter()
                            .position(|c| *c == 0)
                            .unwrap_or(info.strAppName.len());
                        (
                            info.Process.dwProcessId,
                            String::from_utf16_lossy(&info.strAppName[..name_end]),
                            None,
                        )
                    })
                    .collect());
            }
            if listed != ERROR_MORE_DATA {
                return Err(format!(
                    "the Restart Manager could not list the processes (error {listed})"
                ));
            }
            // The list grew between calls: make room and ask again.
            infos = (0..needed).map(|_| RM_PROCESS_INFO::default()).collect();
        }
        Err("the Restart Manager's list kept changing".into())
    }
}

/// Elsewhere there is no way yet.
#[cfg(not(any(target_os = "linux", windows)))]
pub fn holders(_dir: &Path) -> Result<Vec<Holder>, String> {
    Err("finding the processes that hold files is not available on this platform yet".into())
}

/// How a module is stopped and started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Nothing to stop (a web module relies on its maintenance page).
    None,
    /// An operating-system service: systemd unit or Windows service.
    Service(String),
    /// An IIS application pool (Windows).
    AppPool(String),
    /// Commands of the module's own, run by the shell.
    Commands { stop: String, start: String },
}

impl Control {
    pub fn is_none(&self) -> bool {
        matches!(self, Control::None)
    }

    pub fn describe(&self) -> String {
        match self {
            Control::None => "nothing".into(),
            Control::Service(name) => format!("service {name}"),
            Control::AppPool(name) => format!("application pool {name}"),
            Control::Commands { .. } => "the module's stop/start commands".into(),
        }
    }

    pub async fn stop(&self) -> Result<(), String> {
        self.act(false).await
    }

    pub async fn start(&self) -> Result<(), String> {
        self.act(true).await
    }

    async fn act(&self, start: bool) -> Result<(), String> {
        let verb = if start { "start" } else { "stop" };
        let mut command = match self {
            Control::None => return Ok(()),
            Control::Commands { stop, start: up } => shell(if start { up } else { stop }),
            Control::Service(name) => service_command(name, verb),
            Control::AppPool(name) => app_pool_command(name, verb)?,
        };
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .map_err(|_| {
                format!(
                    "could not {verb} {}: no answer within 120 s",
                    self.describe()
                )
            })?
            .map_err(|e| format!("could not {verb} {}: {e}", self.describe()))?;
        // Already as asked is done, as systemctl has it. sc.exe refuses to
        // stop a stopped service (1062) or start a running one (1056); Wine's
        // says only 1: the service's state decides.
        #[cfg(windows)]
        let already = match self {
            Control::Service(name) if !output.status.success() => {
                service_state(name).await.as_deref()
                    == Some(if start { "RUNNING" } else { "STOPPED" })
            }
            _ => false,
        };
        #[cfg(not(windows))]
        let already = false;
        if output.status.success() || already {
            #[cfg(windows)]
            if let Control::Service(name) = self {
                return wait_for_service_state(name, if start { "RUNNING" } else { "STOPPED" })
                    .await;
            }
            Ok(())
        } else {
            // sc.exe and appcmd.exe say why on stdout, others on stderr.
            let said: Vec<String> = [&output.stderr, &output.stdout]
                .iter()
                .map(|bytes| decode_output(bytes).trim().to_owned())
                .filter(|text| !text.is_empty())
                .collect();
            Err(format!(
                "could not {verb} {}: {}{}",
                self.describe(),
                output.status,
                match said.join(" ") {
                    text if text.is_empty() => String::new(),
                    text => format!(": {text}"),
                }
            ))
        }
    }
}

/// A module's own command line, run by the shell as written.
fn shell(line: &str) -> Command {
    #[cfg(windows)]
    {
        // cmd.exe does not read the `\"` Rust escapes quotes as: the line
        // goes as is, and /S takes the outer quotes off and keeps the rest
        // (a quoted path with spaces, `&`, `%`).
        let mut command = Command::new("cmd.exe");
        command.raw_arg(format!("/D /S /C \"{line}\""));
        command
    }
    #[cfg(not(windows))]
    {
        let mut command = Command::new("sh");
        command.arg("-c").arg(line);
        command
    }
}

fn service_command(name: &str, verb: &str) -> Command {
    if cfg!(windows) {
        let mut command = Command::new("sc.exe");
        command.arg(verb).arg(name);
        command
    } else {
        let mut command = Command::new("systemctl");
        command.arg(verb).arg(name);
        command
    }
}

fn app_pool_command(name: &str, verb: &str) -> Result<Command, String> {
    if !cfg!(windows) {
        return Err(format!(
            "IIS application pool {name} cannot be managed: IIS runs only on Windows"
        ));
    }
    let windir = std::env::var("windir").unwrap_or_else(|_| r"C:\Windows".into());
    let mut command = Command::new(Path::new(&windir).join(r"system32\inetsrv\appcmd.exe"));
    command
        .arg(verb)
        .arg("apppool")
        .arg(format!("/apppool.name:{name}"));
    Ok(command)
}

/// A service's state as `sc.exe query` says it (`RUNNING`, `STOPPED`,
/// `START_PENDING`, …); `None` when it cannot be read.
#[cfg(windows)]
async fn service_state(name: &str) -> Option<String> {
    let output = Command::new("sc.exe")
        .arg("query")
        .arg(name)
        .output()
        .await
        .ok()?;
    let text = decode_output(&output.stdout);
    // "        STATE              : 4  RUNNING"
    text.lines()
        .find(|line| line.trim_start().starts_with("STATE"))
        .and_then(|line| line.split_whitespace().last())
        .map(str::to_owned)
}

/// `sc.exe stop` returns before the service has stopped: poll its state.
#[cfg(windows)]
async fn wait_for_service_state(name: &str, state: &str) -> Result<(), String> {
    for _ in 0..240 {
        if service_state(name).await.as_deref() == Some(state) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("service {name} did not reach {state} within 120 s"))
}

#[cfg(all(test, windows))]
mod windows_tests {
    use super::*;

    /// A `.cmd` that writes its first argument to the file its second names.
    fn tool(dir: &Path) -> PathBuf {
        let tool = dir.join("stop svc.cmd");
        std::fs::write(&tool, "@echo off\r\necho %~1> %2\r\n").expect("write");
        tool
    }

    #[tokio::test]
    async fn a_command_with_spaces_quotes_ampersands_and_percents_runs_as_written() {
        for folder in ["Program Files", "R&D tools", "100% sure"] {
            let base = tempfile::tempdir().expect("tempdir");
            let dir = base.path().join(folder);
            std::fs::create_dir_all(&dir).expect("mkdir");
            let tool = tool(&dir);
            // Outside the folder: a second `%` would pair with the first,
            // and cmd.exe expands `%…%` in a line, as typed at its prompt.
            let (said, second) = (base.path().join("said.txt"), base.path().join("second.txt"));
            let control = Control::Commands {
                stop: format!(
                    "\"{}\" now \"{}\" & echo second> \"{}\"",
                    tool.display(),
                    said.display(),
                    second.display()
                ),
                start: String::new(),
            };
            let ran = control.stop().await;
            let said = std::fs::read_to_string(said);
            assert!(
                said.as_deref().is_ok_and(|s| s.trim() == "now"),
                "{folder}: {ran:?}, said.txt: {said:?}"
            );
            let second = std::fs::read_to_string(second).expect("second.txt");
            assert_eq!(second.trim(), "second", "{folder}");
        }
    }

    #[tokio::test]
    async fn a_failed_command_says_what_it_printed() {
        let control = Control::Commands {
            stop: "echo the pool is locked & exit /b 3".into(),
            start: String::new(),
        };
        let e = control.stop().await.expect_err("exit 3");
        assert!(e.contains("the pool is locked"), "{e}");
    }

    #[tokio::test]
    async fn a_service_already_stopped_or_already_running_is_as_asked() {
        // Wine's service manager has a Spooler, as Windows does.
        let spooler = Control::Service("Spooler".into());
        spooler.stop().await.expect("stop");
        spooler.stop().await.expect("stop a stopped service");
        spooler.start().await.expect("start");
        spooler.start().await.expect("start a running service");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn names_a_process_whose_working_directory_is_inside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(dir.path())
            .spawn()
            .expect("sleep");
        let found = holders(dir.path()).expect("holders");
        let _ = child.kill();
        let _ = child.wait();
        let holder = found
            .iter()
            .find(|h| h.pid == child.id())
            .expect("the sleep is named");
        assert!(holder.executable.ends_with("sleep"), "{holder}");
        assert!(!holder.user.is_empty());
    }
}
