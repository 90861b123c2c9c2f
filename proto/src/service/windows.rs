//! Windows: the service registered with the service control manager (SCM)
//! through the `windows-service` crate, and the process run under it.

use std::ffi::OsString;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use windows_service::service::{
    Service, ServiceAccess, ServiceAction, ServiceActionType, ServiceConfig, ServiceControl,
    ServiceControlAccept, ServiceErrorControl, ServiceExitCode, ServiceFailureActions,
    ServiceFailureResetPeriod, ServiceInfo, ServiceStartType, ServiceState, ServiceStatus,
    ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use super::{Action, ServiceError, Spec};

/// How long `start` and `stop` wait for the service to get there.
const WAIT: Duration = Duration::from_secs(120);

/// The SCM's ERROR_SERVICE_DOES_NOT_EXIST.
const NOT_INSTALLED: i32 = 1060;

/// How the service `name` stands (see [`super::find`]).
pub fn find(name: &str, _unit_dir: &std::path::Path) -> super::Found {
    let manager = match ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
    {
        Ok(manager) => manager,
        Err(e) => {
            return super::Found::Unknown(format!(
                "cannot open the service control manager: {}",
                describe(&e)
            ));
        }
    };
    let service = match manager.open_service(
        name,
        ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
    ) {
        Ok(service) => service,
        Err(e) if os_error(&e) == Some(NOT_INSTALLED) => return super::Found::NotInstalled,
        Err(e) => {
            return super::Found::Unknown(format!("cannot open the service: {}", describe(&e)));
        }
    };
    let (status, config) = match (service.query_status(), service.query_config()) {
        (Ok(status), Ok(config)) => (status, config),
        (Err(e), _) | (_, Err(e)) => {
            return super::Found::Unknown(format!("cannot query the service: {}", describe(&e)));
        }
    };
    super::Found::Installed {
        running: status.current_state == ServiceState::Running,
        start_mode: start_mode(&service, &config).to_owned(),
    }
}

/// Carries out `action` for the service `spec` with the SCM (see
/// [`super::control`]); one step below for each action.
pub fn control(spec: &Spec, action: Action) -> Result<String, ServiceError> {
    let access = match action {
        Action::Install => ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
        _ => ServiceManagerAccess::CONNECT,
    };
    let manager = ServiceManager::local_computer(None::<&str>, access).map_err(|e| {
        failure(
            spec,
            "cannot open the service control manager (run as an administrator)",
            e,
        )
    })?;
    match action {
        Action::Install => install(&manager, spec),
        Action::Uninstall => uninstall(&manager, spec),
        Action::Start => start(&manager, spec),
        Action::Stop => stop(&manager, spec),
        Action::Status => status(&manager, spec),
    }
}

/// Registers the service as LocalSystem, then configures it
/// ([`configure`]); registered whole or not at all.
fn install(manager: &ServiceManager, spec: &Spec) -> Result<String, ServiceError> {
    let info = ServiceInfo {
        name: spec.name.into(),
        display_name: spec.display_name.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: spec.executable.clone(),
        launch_arguments: spec.arguments.clone(),
        dependencies: Vec::new(),
        // LocalSystem: the procedure's installs stop services and
        // IIS pools and write under Program Files.
        account_name: None,
        account_password: None,
    };
    let service = manager
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_CONFIG | ServiceAccess::DELETE,
        )
        .map_err(|e| failure(spec, "cannot register the service", e))?;
    match configure(&service, spec) {
        Ok(how) => Ok(format!(
            "{} registered ({}): {how}; start it now with `service start`",
            spec.name, spec.display_name
        )),
        Err(e) => {
            // Registered whole or not at all.
            let _ = service.delete();
            Err(e)
        }
    }
}

/// Stops the service if it runs, then unregisters it.
fn uninstall(manager: &ServiceManager, spec: &Spec) -> Result<String, ServiceError> {
    let service = open(
        manager,
        spec,
        ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
    )?;
    stop_and_wait(&service, spec)?;
    service
        .delete()
        .map_err(|e| failure(spec, "cannot unregister the service", e))?;
    Ok(format!("{} stopped and unregistered", spec.name))
}

/// Starts the service unless it runs, and waits until it does.
fn start(manager: &ServiceManager, spec: &Spec) -> Result<String, ServiceError> {
    let service = open(
        manager,
        spec,
        ServiceAccess::QUERY_STATUS | ServiceAccess::START,
    )?;
    if current_state(&service, spec)? != ServiceState::Running {
        service
            .start::<OsString>(&[])
            .map_err(|e| failure(spec, "cannot start the service", e))?;
        wait_for(&service, ServiceState::Running, spec)?;
    }
    Ok(format!("{} is running", spec.name))
}

/// Stops the service unless it is stopped, and waits until it is.
fn stop(manager: &ServiceManager, spec: &Spec) -> Result<String, ServiceError> {
    let service = open(
        manager,
        spec,
        ServiceAccess::QUERY_STATUS | ServiceAccess::STOP,
    )?;
    stop_and_wait(&service, spec)?;
    Ok(format!("{} is stopped", spec.name))
}

/// Whether the service runs (and as which process), how it starts, and
/// what it runs.
fn status(manager: &ServiceManager, spec: &Spec) -> Result<String, ServiceError> {
    let service = open(
        manager,
        spec,
        ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
    )?;
    let status = service
        .query_status()
        .map_err(|e| failure(spec, "cannot query the service", e))?;
    let config = service
        .query_config()
        .map_err(|e| failure(spec, "cannot read the service's configuration", e))?;
    let pid = status
        .process_id
        .map(|pid| format!(", pid {pid}"))
        .unwrap_or_default();
    Ok(format!(
        "{}: {}{pid}; start mode {}; runs {}",
        spec.name,
        state_name(status.current_state),
        start_mode(&service, &config),
        config.executable_path.display()
    ))
}

/// Points the registered service `spec.name` at `spec.executable` run with
/// `spec.arguments` (ChangeServiceConfigW), keeping its start mode, account
/// and recovery actions: how the agent that updated itself makes its new
/// version the service's. Checked: the SCM, asked again, names the new
/// executable.
pub fn repoint(spec: &Spec) -> Result<String, ServiceError> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| failure(spec, "cannot open the service control manager", e))?;
    let service = open(
        &manager,
        spec,
        ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_CONFIG,
    )?;
    let config = service
        .query_config()
        .map_err(|e| failure(spec, "cannot query the service", e))?;
    let info = ServiceInfo {
        name: spec.name.into(),
        display_name: spec.display_name.into(),
        service_type: config.service_type,
        start_type: config.start_type,
        error_control: config.error_control,
        executable_path: spec.executable.clone(),
        launch_arguments: spec.arguments.clone(),
        // Empty and None leave the dependencies and the account as they are.
        dependencies: Vec::new(),
        account_name: None,
        account_password: None,
    };
    service
        .change_config(&info)
        .map_err(|e| failure(spec, "cannot point the service at the new executable", e))?;
    let now = service
        .query_config()
        .map_err(|e| failure(spec, "cannot query the service", e))?;
    let runs = now.executable_path.to_string_lossy().into_owned();
    if let Err(e) = flush_registration(spec.name) {
        return Err(ServiceError::new(
            spec.name,
            format!("the change could not be made durable (RegFlushKey): {e}"),
        ));
    }
    if !runs.contains(&*spec.executable.to_string_lossy()) {
        return Err(ServiceError::new(
            spec.name,
            format!(
                "the service control manager accepted the change, yet the service still runs {runs}"
            ),
        ));
    }
    Ok(format!("{} now runs {runs}", spec.name))
}

/// Writes the service's registration (its registry key) to disk now: the
/// registry is flushed lazily, and a power cut must not bring back the
/// previous executable once the agent says the new one is the service's.
#[allow(unsafe_code)] // three registry calls into advapi32, on a key of its own
fn flush_registration(name: &str) -> std::io::Result<()> {
    use windows_sys::Win32::Foundation::ERROR_SUCCESS;
    use windows_sys::Win32::System::Registry::{
        HKEY, HKEY_LOCAL_MACHINE, KEY_READ, RegCloseKey, RegFlushKey, RegOpenKeyExW,
    };
    let path: Vec<u16> = format!("SYSTEM\\CurrentControlSet\\Services\\{name}")
        .encode_utf16()
        .chain(Some(0))
        .collect();
    let mut key: HKEY = std::ptr::null_mut();
    // SAFETY: `path` is NUL-terminated UTF-16 that outlives the call, and
    // `key` is a valid place for the opened handle.
    let opened = unsafe { RegOpenKeyExW(HKEY_LOCAL_MACHINE, path.as_ptr(), 0, KEY_READ, &mut key) };
    if opened != ERROR_SUCCESS {
        return Err(std::io::Error::from_raw_os_error(opened as i32));
    }
    // SAFETY: `key` was opened above and is closed once, here.
    let flushed = unsafe {
        let flushed = RegFlushKey(key);
        RegCloseKey(key);
        flushed
    };
    match flushed {
        ERROR_SUCCESS => Ok(()),
        error => Err(std::io::Error::from_raw_os_error(error as i32)),
    }
}

/// Opens the registered service with `access`; says so when it is not
/// installed.
fn open(
    manager: &ServiceManager,
    spec: &Spec,
    access: ServiceAccess,
) -> Result<Service, ServiceError> {
    manager.open_service(spec.name, access).map_err(|e| {
        if os_error(&e) == Some(NOT_INSTALLED) {
            ServiceError::new(spec.name, "not installed (`service install` registers it)")
        } else {
            failure(spec, "cannot open the service", e)
        }
    })
}

/// The service's state now.
fn current_state(service: &Service, spec: &Spec) -> Result<ServiceState, ServiceError> {
    service
        .query_status()
        .map(|status| status.current_state)
        .map_err(|e| failure(spec, "cannot query the service", e))
}

/// Stops the open service unless it is stopped, and waits until it is.
fn stop_and_wait(service: &Service, spec: &Spec) -> Result<(), ServiceError> {
    if current_state(service, spec)? != ServiceState::Stopped {
        service
            .stop()
            .map_err(|e| failure(spec, "cannot stop the service", e))?;
        wait_for(service, ServiceState::Stopped, spec)?;
    }
    Ok(())
}

/// How the service starts, in the words of `services.msc`.
fn start_mode(service: &Service, config: &ServiceConfig) -> &'static str {
    match config.start_type {
        ServiceStartType::AutoStart if delayed(service) => "Automatic (Delayed Start)",
        ServiceStartType::AutoStart => "Automatic",
        ServiceStartType::OnDemand => "Manual",
        ServiceStartType::Disabled => "Disabled",
        _ => "boot or system",
    }
}

/// What the SCM refused: what was being done, and what it said.
fn failure(spec: &Spec, what: &str, e: windows_service::Error) -> ServiceError {
    ServiceError::new(spec.name, format!("{what}: {}", describe(&e)))
}

/// Sets what `create_service` cannot: the description, the delayed start,
/// the recovery actions. Says how it starts and recovers. (Wine's service
/// manager has neither delayed starts nor recovery actions: it answers
/// ERROR_INVALID_LEVEL, which no Windows since Vista does.)
fn configure(service: &Service, spec: &Spec) -> Result<String, ServiceError> {
    let fail = |what: &str, e| failure(spec, what, e);
    service
        .set_description(spec.description)
        .map_err(|e| fail("cannot set the description", e))?;
    // The procedure's expected start mode: Automatic (Delayed Start).
    let start_mode = match service.set_delayed_auto_start(true) {
        Ok(()) => "Automatic (Delayed Start)",
        Err(e) if os_error(&e) == Some(124) => {
            "Automatic (this service manager has no Delayed Start)"
        }
        Err(e) => return Err(fail("cannot set Automatic (Delayed Start)", e)),
    };
    // Restarted after a failure, and a stop with an error exit code counts
    // as one.
    let recovery = service
        .update_failure_actions(recovery())
        .and_then(|()| service.set_failure_actions_on_non_crash_failures(true));
    let recovery = match recovery {
        Ok(()) => "restarted after a failure",
        Err(e) if os_error(&e) == Some(124) => {
            "not restarted after a failure: this service manager has no recovery actions"
        }
        Err(e) => return Err(fail("cannot set the recovery actions", e)),
    };
    Ok(format!("{start_mode}, {recovery}"))
}

/// Restart after 10 s, then 1 min, then 5 min; the count resets after a day.
fn recovery() -> ServiceFailureActions {
    let restart = |seconds| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(seconds),
    };
    ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart(10), restart(60), restart(300)]),
    }
}

/// Whether an automatic service starts delayed (`QueryServiceConfig2W`,
/// which the crate does not read).
#[allow(unsafe_code)] // one FFI call into advapi32, with a buffer of its own type
fn delayed(service: &Service) -> bool {
    use windows_sys::Win32::System::Services::{
        QueryServiceConfig2W, SERVICE_CONFIG_DELAYED_AUTO_START_INFO,
        SERVICE_DELAYED_AUTO_START_INFO,
    };
    let mut info = SERVICE_DELAYED_AUTO_START_INFO {
        fDelayedAutostart: 0,
    };
    let mut needed = 0u32;
    // SAFETY: the buffer is a SERVICE_DELAYED_AUTO_START_INFO of the size
    // given; the handle is open with QUERY_CONFIG.
    let ok = unsafe {
        QueryServiceConfig2W(
            service.raw_handle(),
            SERVICE_CONFIG_DELAYED_AUTO_START_INFO,
            (&raw mut info).cast(),
            std::mem::size_of::<SERVICE_DELAYED_AUTO_START_INFO>() as u32,
            &mut needed,
        )
    };
    ok != 0 && info.fDelayedAutostart != 0
}

/// Waits until the service is in `state`; says why when it stops while
/// starting, or takes longer than [`WAIT`].
fn wait_for(service: &Service, state: ServiceState, spec: &Spec) -> Result<(), ServiceError> {
    let started = Instant::now();
    loop {
        let status = service
            .query_status()
            .map_err(|e| failure(spec, "cannot query the service", e))?;
        if status.current_state == state {
            return Ok(());
        }
        if status.current_state == ServiceState::Stopped && state == ServiceState::Running {
            return Err(ServiceError::new(
                spec.name,
                format!(
                    "stopped as it started ({}); its log in the data folder's logs says why",
                    exit_code(status.exit_code)
                ),
            ));
        }
        if started.elapsed() > WAIT {
            return Err(ServiceError::new(
                spec.name,
                format!(
                    "still {} after {} s",
                    state_name(status.current_state),
                    WAIT.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn state_name(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Stopped => "stopped",
        ServiceState::StartPending => "starting",
        ServiceState::StopPending => "stopping",
        ServiceState::Running => "running",
        ServiceState::ContinuePending => "resuming",
        ServiceState::PausePending => "pausing",
        ServiceState::Paused => "paused",
    }
}

fn exit_code(code: ServiceExitCode) -> String {
    match code {
        ServiceExitCode::Win32(code) => format!("exit code {code}"),
        ServiceExitCode::ServiceSpecific(code) => format!("service exit code {code}"),
    }
}

fn os_error(e: &windows_service::Error) -> Option<i32> {
    match e {
        windows_service::Error::Winapi(e) => e.raw_os_error(),
        _ => None,
    }
}

fn describe(e: &windows_service::Error) -> String {
    match e {
        windows_service::Error::Winapi(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// What the process run under the SCM is told: when to stop, and to say it
/// is running once it is.
#[derive(Debug, Clone)]
pub struct Scm {
    stop: tokio::sync::watch::Receiver<bool>,
    reporter: Arc<Reporter>,
}

impl Scm {
    /// Resolves when the SCM asks the service to stop (or the system shuts
    /// down).
    pub async fn stopping(mut self) {
        let _ = self.stop.wait_for(|stop| *stop).await;
    }

    /// Tells the SCM the service runs (START_PENDING until then).
    pub fn running(&self) {
        self.reporter.set(ServiceState::Running, Duration::ZERO);
    }
}

/// Reports the service's state, counting checkpoints while it is pending.
#[derive(Debug)]
struct Reporter {
    handle: service_control_handler::ServiceStatusHandle,
    checkpoint: Mutex<u32>,
}

impl Reporter {
    fn set(&self, state: ServiceState, wait_hint: Duration) {
        self.report(state, wait_hint, ServiceExitCode::NO_ERROR);
    }

    fn report(&self, state: ServiceState, wait_hint: Duration, exit_code: ServiceExitCode) {
        let mut checkpoint = self.checkpoint.lock().unwrap_or_else(|p| p.into_inner());
        let pending = matches!(
            state,
            ServiceState::StartPending | ServiceState::StopPending
        );
        *checkpoint = if pending { *checkpoint + 1 } else { 0 };
        let accepted = if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        };
        if let Err(e) = self.handle.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accepted,
            exit_code,
            checkpoint: *checkpoint,
            wait_hint,
            process_id: None,
        }) {
            tracing::error!(
                "cannot report the service's state to the SCM: {}",
                describe(&e)
            );
        }
    }
}

type Serve = Box<dyn FnOnce(Scm) -> Result<(), String> + Send>;

/// What the SCM's thread runs: set once, by [`run`], before the dispatcher starts.
static SERVE: OnceLock<(&'static str, Mutex<Option<Serve>>)> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

/// Runs `serve` as the service `name` under the SCM, blocking until it has
/// stopped. `serve` calls [`Scm::running`] once it runs, and returns once
/// [`Scm::stopping`] has resolved and it has stopped cleanly; an error ends
/// the service with a failure, so its recovery actions restart it.
///
/// Run from a console instead of by the SCM, it fails at once, saying so.
pub fn run(
    name: &'static str,
    serve: impl FnOnce(Scm) -> Result<(), String> + Send + 'static,
) -> Result<(), ServiceError> {
    SERVE
        .set((name, Mutex::new(Some(Box::new(serve)))))
        .map_err(|_| ServiceError::new(name, "the service entry is already set"))?;
    service_dispatcher::start(name, ffi_service_main).map_err(|e| {
        // ERROR_FAILED_SERVICE_CONTROLLER_CONNECT
        if os_error(&e) == Some(1063) {
            ServiceError::new(
                name,
                "`service run` is for the service control manager; in a console, use `run`",
            )
        } else {
            ServiceError::new(name, format!("cannot reach the SCM: {}", describe(&e)))
        }
    })
}

fn service_main(_arguments: Vec<OsString>) {
    let Some((name, serve)) = SERVE.get() else {
        return;
    };
    let Some(serve) = serve.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    let (stop, stop_asked) = tokio::sync::watch::channel(false);
    let reporter: Arc<OnceLock<Arc<Reporter>>> = Arc::new(OnceLock::new());
    let handler_reporter = reporter.clone();
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            if let Some(reporter) = handler_reporter.get() {
                reporter.set(ServiceState::StopPending, Duration::from_secs(10));
            }
            stop.send_replace(true);
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let handle = match service_control_handler::register(name, handler) {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!("cannot register with the SCM: {}", describe(&e));
            return;
        }
    };
    let reporter = reporter
        .get_or_init(|| {
            Arc::new(Reporter {
                handle,
                checkpoint: Mutex::new(0),
            })
        })
        .clone();
    reporter.set(ServiceState::StartPending, Duration::from_secs(30));
    let scm = Scm {
        stop: stop_asked.clone(),
        reporter: reporter.clone(),
    };
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(serve(scm));
    });
    // While it stops, tell the SCM it is making progress: a running install
    // finishes or rolls back before the service stops, however long it takes.
    let result = loop {
        match finished.recv_timeout(Duration::from_secs(3)) {
            Ok(result) => break result,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err("the service thread ended without a result".to_owned());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if *stop_asked.borrow() {
                    reporter.set(ServiceState::StopPending, Duration::from_secs(10));
                }
            }
        }
    };
    let exit_code = match &result {
        Ok(()) => ServiceExitCode::NO_ERROR,
        Err(e) => {
            tracing::error!("{name} stopped on an error: {e}");
            ServiceExitCode::ServiceSpecific(1)
        }
    };
    reporter.report(ServiceState::Stopped, Duration::ZERO, exit_code);
}
