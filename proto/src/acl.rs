//! Secret files and folders (the CA's key, an agent's key, the publisher's
//! key, the portal's local token, the first admin's password) readable by
//! the account that runs Flotilla, and by the system's administrators, only.
//!
//! On Unix: mode 0600 for a file, 0700 for a folder. On Windows: a
//! protected access list (nothing inherited from `%PROGRAMDATA%`, where
//! every local user may read) granting SYSTEM, Administrators and the
//! object's owner (`OWNER RIGHTS`: the service's account, which made it)
//! full control, and nobody else anything.

use std::io;
use std::path::Path;

/// The access list a secret gets on Windows, in SDDL: protected (`P`),
/// full control (`FA`) to SYSTEM (`SY`), Administrators (`BA`) and the
/// owner (`OW`); a folder's entries are inherited by what it holds
/// (`OICI`).
pub const SECRET_FILE_SDDL: &str = "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;OW)";
pub const SECRET_FOLDER_SDDL: &str = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;OW)";

/// Makes `path` (a file or a folder) readable by its owner and the
/// system's administrators only.
pub fn restrict(path: &Path) -> io::Result<()> {
    imp::restrict(path, path.is_dir())
}

/// The access list of `path`, in SDDL (Windows).
#[cfg(windows)]
pub fn sddl(path: &Path) -> io::Result<String> {
    imp::sddl(path)
}

/// Sets the access list of `path` from SDDL (Windows): what [`restrict`]
/// does with its own, for a test to make a file others can read.
#[cfg(windows)]
pub fn set_sddl(path: &Path, sddl: &str) -> io::Result<()> {
    imp::apply(path, sddl)
}

/// Who else may read `path`: `Some` with what grants it (a mode, or the
/// access list's entries) when anyone but its owner, SYSTEM and the
/// Administrators can; `None` when nobody else can.
pub fn readable_by_others(path: &Path) -> io::Result<Option<String>> {
    imp::readable_by_others(path)
}

#[cfg(unix)]
mod imp {
    use std::io;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    pub fn restrict(path: &Path, folder: bool) -> io::Result<()> {
        let mode = if folder { 0o700 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    pub fn readable_by_others(path: &Path) -> io::Result<Option<String>> {
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        Ok((mode & 0o077 != 0).then(|| format!("mode {mode:o}")))
    }
}

#[cfg(windows)]
#[allow(unsafe_code)] // security descriptors through advapi32, each freed by its owner
mod imp {
    use std::io;
    use std::os::windows::ffi::OsStrExt;
    use std::path::Path;

    use windows_sys::Win32::Foundation::{ERROR_SUCCESS, LocalFree};
    use windows_sys::Win32::Security::Authorization::{
        ConvertSecurityDescriptorToStringSecurityDescriptorW,
        ConvertStringSecurityDescriptorToSecurityDescriptorW, GetNamedSecurityInfoW,
        SDDL_REVISION_1, SE_FILE_OBJECT, SetNamedSecurityInfoW,
    };
    use windows_sys::Win32::Security::{
        ACL, DACL_SECURITY_INFORMATION, GetSecurityDescriptorDacl,
        PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR,
    };

    fn wide(text: &std::ffi::OsStr) -> Vec<u16> {
        text.encode_wide().chain(std::iter::once(0)).collect()
    }

    /// A security descriptor the system allocated, freed when dropped.
    struct Descriptor(PSECURITY_DESCRIPTOR);

    impl Drop for Descriptor {
        fn drop(&mut self) {
            if !self.0.is_null() {
                // SAFETY: allocated by the system with LocalAlloc, freed once.
                unsafe { LocalFree(self.0) };
            }
        }
    }

    pub fn restrict(path: &Path, folder: bool) -> io::Result<()> {
        apply(
            path,
            if folder {
                super::SECRET_FOLDER_SDDL
            } else {
                super::SECRET_FILE_SDDL
            },
        )
    }

    pub fn apply(path: &Path, sddl: &str) -> io::Result<()> {
        let protected = sddl.starts_with("D:P");
        let sddl = wide(std::ffi::OsStr::new(sddl));
        let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `sddl` is NUL-terminated; the descriptor is freed by Descriptor.
        let made = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                std::ptr::null_mut(),
            )
        };
        if made == 0 {
            return Err(io::Error::last_os_error());
        }
        let descriptor = Descriptor(descriptor);
        let (mut present, mut defaulted) = (0, 0);
        let mut dacl: *mut ACL = std::ptr::null_mut();
        // SAFETY: a valid descriptor; the DACL points into it.
        let found = unsafe {
            GetSecurityDescriptorDacl(descriptor.0, &mut present, &mut dacl, &mut defaulted)
        };
        if found == 0 || present == 0 {
            return Err(io::Error::last_os_error());
        }
        let name = wide(path.as_os_str());
        // SAFETY: `name` is NUL-terminated; the DACL lives as long as `descriptor`.
        let set = unsafe {
            SetNamedSecurityInfoW(
                name.as_ptr(),
                SE_FILE_OBJECT,
                if protected {
                    DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION
                } else {
                    DACL_SECURITY_INFORMATION
                },
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                dacl,
                std::ptr::null(),
            )
        };
        match set {
            ERROR_SUCCESS => Ok(()),
            code => Err(io::Error::from_raw_os_error(code as i32)),
        }
    }

    /// The access list of `path`, in SDDL.
    pub fn sddl(path: &Path) -> io::Result<String> {
        let name = wide(path.as_os_str());
        let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `name` is NUL-terminated; the descriptor is freed by Descriptor.
        let got = unsafe {
            GetNamedSecurityInfoW(
                name.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut descriptor,
            )
        };
        if got != ERROR_SUCCESS {
            return Err(io::Error::from_raw_os_error(got as i32));
        }
        let descriptor = Descriptor(descriptor);
        let mut text: windows_sys::core::PWSTR = std::ptr::null_mut();
        let mut length = 0u32;
        // SAFETY: a valid descriptor; the string is freed with LocalFree below.
        let converted = unsafe {
            ConvertSecurityDescriptorToStringSecurityDescriptorW(
                descriptor.0,
                SDDL_REVISION_1,
                DACL_SECURITY_INFORMATION,
                &mut text,
                &mut length,
            )
        };
        if converted == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the system wrote `length` UTF-16 units at `text`.
        let sddl = unsafe {
            let units = std::slice::from_raw_parts(text, length as usize);
            let sddl = String::from_utf16_lossy(units);
            LocalFree(text.cast());
            sddl
        };
        Ok(sddl.trim_end_matches('\0').to_owned())
    }

    pub fn readable_by_others(path: &Path) -> io::Result<Option<String>> {
        Ok(super::others_in_sddl(&sddl(path)?))
    }
}

/// The access list's entries that let someone other than SYSTEM, the
/// Administrators and the owner read, from its SDDL (`D:P(A;;FA;;;SY)…`):
/// `None` when there are none. An access list that is missing (`D:NO_ACCESS_CONTROL`)
/// lets everyone in.
pub fn others_in_sddl(sddl: &str) -> Option<String> {
    let dacl = sddl.split_once("D:").map_or(sddl, |(_, d)| d);
    if dacl.starts_with("NO_ACCESS_CONTROL") {
        return Some("no access list: everyone may read".to_owned());
    }
    let trusted = ["SY", "BA", "OW", "S-1-5-18", "S-1-5-32-544", "S-1-3-4"];
    let others: Vec<&str> = dacl
        .split('(')
        .skip(1)
        .filter_map(|ace| ace.split(')').next())
        .filter(|ace| {
            let fields: Vec<&str> = ace.split(';').collect();
            // Allowed, for the object itself (not only what it holds).
            let allows = fields
                .first()
                .is_some_and(|kind| matches!(*kind, "A" | "OA" | "XA"));
            let flags = fields.get(1).copied().unwrap_or_default();
            let rights = fields.get(2).copied().unwrap_or_default();
            let trustee = fields.last().copied().unwrap_or_default();
            // Reading, or changing who may read (the list, the owner).
            let letters = ["FA", "FR", "GA", "GR", "CC", "WD", "WO"];
            let reads = letters
                .iter()
                .any(|r| rights.as_bytes().chunks(2).any(|pair| pair == r.as_bytes()))
                || rights
                    .strip_prefix("0x")
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .is_some_and(|mask| mask & 0x900C_0001 != 0);
            allows && reads && !flags.contains("IO") && !trusted.contains(&trustee)
        })
        .collect();
    (!others.is_empty()).then(|| others.iter().map(|a| format!("({a})")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_list_letting_others_read_is_told_apart() {
        assert_eq!(others_in_sddl(SECRET_FILE_SDDL), None);
        assert_eq!(others_in_sddl(SECRET_FOLDER_SDDL), None);
        assert_eq!(
            others_in_sddl("D:AI(A;ID;FA;;;SY)(A;ID;FA;;;BA)(A;ID;0x1200a9;;;BU)").as_deref(),
            Some("(A;ID;0x1200a9;;;BU)")
        );
        assert!(others_in_sddl("D:(A;;FR;;;WD)").is_some());
        assert!(
            others_in_sddl("D:(D;;FA;;;BU)(A;;FA;;;SY)").is_none(),
            "a denial"
        );
        assert!(others_in_sddl("D:NO_ACCESS_CONTROL").is_some());
        assert!(
            others_in_sddl("D:P(A;;WD;;;BU)").is_some(),
            "Users may change the list"
        );
        assert!(
            others_in_sddl("D:P(A;;CC;;;BU)").is_some(),
            "read data, spelled CC"
        );
        assert!(
            others_in_sddl("D:P(A;;0x10000000;;;AU)").is_some(),
            "generic all"
        );
        assert!(
            others_in_sddl("D:P(A;OICIIO;FA;;;CO)").is_none(),
            "inherit-only"
        );
        assert!(
            others_in_sddl("D:P(A;;FA;;;SY)(A;;0x100000;;;BU)").is_none(),
            "synchronize only"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_restricted_file_and_folder_are_their_owners() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("key.pem");
        std::fs::write(&file, "secret").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(
            readable_by_others(&file).ok().flatten().as_deref(),
            Some("mode 644")
        );
        restrict(&file).expect("restrict");
        assert_eq!(readable_by_others(&file).ok().flatten(), None);
        restrict(dir.path()).expect("restrict the folder");
        assert_eq!(readable_by_others(dir.path()).ok().flatten(), None);
    }
}
