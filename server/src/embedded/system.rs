//! The system around the private PostgreSQL: where its binaries are, which
//! user runs it when Strata runs as root, and whether that user can reach the
//! data folder (and which parent folder stops it).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{EmbeddedError, RunAs, io_err};

/// Finds the folder holding `initdb` and `postgres`.
///
/// # Errors
///
/// [`EmbeddedError::BinariesNotFound`] with installation advice.
pub fn find_binaries() -> Result<PathBuf, EmbeddedError> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("STRATA_PG_BIN") {
        candidates.push(dir.into());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    candidates.extend(versions.into_iter().map(|(_, dir)| dir));
    candidates.extend(
        [
            "/usr/local/pgsql/bin",
            "/usr/pgsql/bin",
            "/opt/homebrew/bin",
        ]
        .into_iter()
        .map(PathBuf::from),
    );
    candidates
        .into_iter()
        .find(|dir| has_both(dir))
        .ok_or(EmbeddedError::BinariesNotFound)
}

/// The user to run PostgreSQL as: none unless we are root.
pub(super) fn run_as() -> Result<Option<RunAs>, EmbeddedError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::env::var("STRATA_PG_USER").unwrap_or_else(|_| "postgres".to_owned());
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() >= 4 && fields[0] == name).then(|| {
                Some(RunAs {
                    name: name.clone(),
                    uid: fields[2].parse().ok()?,
                    gid: fields[3].parse().ok()?,
                })
            })?
        })
        .next()
        .filter(|user| user.uid != 0)
        .map(Some)
        .ok_or(EmbeddedError::NoUnprivilegedUser { user: name })
}

pub(super) fn user_home(name: &str) -> OsString {
    fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() >= 6 && fields[0] == name).then(|| OsString::from(fields[5]))
        })
        .unwrap_or_else(|| "/tmp".into())
}

/// The first parent folder of `dir` that `user` cannot pass through (no search
/// permission for it as owner, group or other), if any: PostgreSQL running as
/// that user could not reach its data below it.
pub(super) fn blocking_parent(dir: &Path, user: &RunAs) -> Option<PathBuf> {
    dir.ancestors().skip(1).find_map(|ancestor| {
        let meta = fs::metadata(ancestor).ok()?;
        let mode = meta.permissions().mode();
        // The permission class that applies, as the kernel picks it (only the
        // user's primary group is considered: a stricter answer at worst).
        let search = if meta.uid() == user.uid {
            mode & 0o100
        } else if meta.gid() == user.gid {
            mode & 0o010
        } else {
            mode & 0o001
        };
        (search == 0).then(|| ancestor.to_owned())
    })
}

/// Every parent folder of `dir` must let `user` through, or PostgreSQL
/// running as that user cannot reach its data.
pub(super) fn check_reachable(dir: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    match blocking_parent(dir, user) {
        None => Ok(()),
        Some(blocked) => Err(EmbeddedError::Unreachable {
            user: user.name.clone(),
            dir: dir.to_owned(),
            blocked,
        }),
    }
}

pub(super) fn chown(path: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(io_err(format!(
        "cannot hand {} to {}",
        path.display(),
        user.name
    )))
}
