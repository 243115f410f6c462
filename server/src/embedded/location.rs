//! Where the private PostgreSQL keeps its cluster when Strata runs as root.
//!
//! PostgreSQL then runs as an unprivileged user, which cannot pass through a
//! folder such as `/root` (mode 0700): a checkout there would stop `strata dev`
//! on a fresh machine or in a container, and loosening the user's folders is
//! not Strata's to do. So a data folder that is new or empty and out of that
//! user's reach becomes a link to a folder of this project's own under
//! `/var/lib/strata/` (or `$TMPDIR/strata-<uid>/` when `/var/lib` cannot be
//! used), named after the project and a hash of the data folder's path; the
//! next run follows the link to the same data. A data folder that already holds
//! files is never moved: that is [`EmbeddedError::Unreachable`], naming the
//! folder in the way.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::system::{blocking_parent, check_reachable, chown};
use super::{EmbeddedError, RunAs, io_err};

/// The preferred home of relocated clusters.
const SYSTEM_BASE: &str = "/var/lib/strata";

/// The folder to keep the cluster of data folder `dir` in, for PostgreSQL
/// running as `user`: `dir` itself (created if new) when `user` can reach it,
/// else the folder `dir` links to (see the module's overview). Canonical.
pub(super) fn prepare(dir: &Path, user: &RunAs) -> Result<PathBuf, EmbeddedError> {
    let Some(link) = absolute(dir)? else {
        // `/`, `.` or `..`: nothing to replace by a link; use it as it is.
        let dir = dir
            .canonicalize()
            .map_err(io_err(format!("cannot resolve {}", dir.display())))?;
        check_reachable(&dir, user)?;
        return Ok(dir);
    };
    prepare_at(&link, user)
}

/// [`prepare`] for the absolute, canonical-parent path `link`.
fn prepare_at(link: &Path, user: &RunAs) -> Result<PathBuf, EmbeddedError> {
    match fs::symlink_metadata(link) {
        Ok(meta) if meta.file_type().is_symlink() => follow(link, user),
        Ok(meta) if meta.is_dir() => match blocking_parent(link, user) {
            None => Ok(link.to_owned()),
            Some(blocked) if is_empty(link)? => {
                fs::remove_dir(link).map_err(io_err(format!(
                    "cannot replace the empty folder {} by a link",
                    link.display()
                )))?;
                relocate(link, user, &blocked)
            }
            Some(blocked) => Err(EmbeddedError::Unreachable {
                user: user.name.clone(),
                dir: link.to_owned(),
                blocked,
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => match blocking_parent(link, user) {
            None => {
                fs::create_dir_all(link)
                    .map_err(io_err(format!("cannot create {}", link.display())))?;
                Ok(link.to_owned())
            }
            Some(blocked) => relocate(link, user, &blocked),
        },
        // A file, or a folder that cannot be examined: creating it says which.
        _ => {
            fs::create_dir_all(link)
                .map_err(io_err(format!("cannot create {}", link.display())))?;
            check_reachable(link, user)?;
            Ok(link.to_owned())
        }
    }
}

/// `dir` with its parent folder created and made canonical; `None` when `dir`
/// has no name of its own (`/`, `.`, `..`).
fn absolute(dir: &Path) -> Result<Option<PathBuf>, EmbeddedError> {
    let Some(name) = dir.file_name() else {
        return Ok(None);
    };
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).map_err(io_err(format!("cannot create {}", parent.display())))?;
    let parent = parent
        .canonicalize()
        .map_err(io_err(format!("cannot resolve {}", parent.display())))?;
    Ok(Some(parent.join(name)))
}

/// The data folder is a link: to a folder Strata made on an earlier run, or
/// to one the user chose. Either way its target must be reachable.
fn follow(link: &Path, user: &RunAs) -> Result<PathBuf, EmbeddedError> {
    match link.canonicalize() {
        Ok(target) if target.is_dir() => {
            check_reachable(&target, user)?;
            Ok(target)
        }
        Ok(target) => Err(io_err(format!(
            "cannot use {} as the data folder: it links to {}, which is not a folder",
            link.display(),
            target.display()
        ))(io::ErrorKind::NotADirectory.into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let target = fs::read_link(link)
                .map_err(io_err(format!("cannot read the link {}", link.display())))?;
            if !bases().iter().any(|base| target.starts_with(base)) {
                return Err(io_err(format!(
                    "cannot use {} as the data folder: it links to {}, which does not exist",
                    link.display(),
                    target.display()
                ))(e));
            }
            // Ours, and gone: most likely a temporary folder cleaned at boot.
            tracing::warn!(
                data_dir = %link.display(),
                gone = %target.display(),
                "{} linked to {}, which is gone (a cleaned temporary folder?); \
                 starting an empty cluster in its place",
                link.display(),
                target.display()
            );
            fs::remove_file(link)
                .map_err(io_err(format!("cannot remove the link {}", link.display())))?;
            prepare_at(link, user)
        }
        Err(e) => Err(io_err(format!("cannot resolve {}", link.display()))(e)),
    }
}

/// Replaces the (absent) data folder `link` by a link to a folder of its own
/// that `user` can reach, and says so in the log.
fn relocate(link: &Path, user: &RunAs, blocked: &Path) -> Result<PathBuf, EmbeddedError> {
    let name = place_name(link);
    let mut refused = Vec::new();
    for base in bases() {
        let target = match claim(&base, &name, user) {
            Ok(target) => target,
            Err(reason) => {
                refused.push(format!("{}: {reason}", base.display()));
                continue;
            }
        };
        std::os::unix::fs::symlink(&target, link).map_err(io_err(format!(
            "cannot link {} to {}",
            link.display(),
            target.display()
        )))?;
        tracing::info!(
            data_dir = %link.display(),
            data = %target.display(),
            blocked = %blocked.display(),
            user = %user.name,
            "PostgreSQL runs as user {} and cannot reach {} ({} does not let it through), so \
             its data lives in {} and {} links there; no folder of yours was opened up, and \
             later runs use the same data",
            user.name,
            link.display(),
            blocked.display(),
            target.display(),
            link.display()
        );
        return Ok(target);
    }
    Err(EmbeddedError::NoDataPlace {
        user: user.name.clone(),
        dir: link.to_owned(),
        blocked: blocked.to_owned(),
        refused: refused.join("; "),
    })
}

/// The folders relocated clusters live under, preferred first.
fn bases() -> [PathBuf; 2] {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    [
        PathBuf::from(SYSTEM_BASE),
        std::env::temp_dir().join(format!("strata-{uid}")),
    ]
}

/// `<project>-<16 hex digits of the SHA-256 of the data folder's path>`: one
/// folder per checkout, recognisable by name.
fn place_name(link: &Path) -> String {
    let project: String = link
        .parent()
        .and_then(Path::file_name)
        .and_then(OsStr::to_str)
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    let project = match project.trim_start_matches('.') {
        "" => "strata",
        name => name,
    };
    let digest = Sha256::digest(link.as_os_str().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{project}-{hex}")
}

/// `base/name`, made (mode 0700) and handed to `user`, if `base` is a safe
/// place for it: a real folder owned by this user, writable by nobody else,
/// that `user` can reach. Otherwise why not.
fn claim(base: &Path, name: &str, user: &RunAs) -> Result<PathBuf, String> {
    if fs::symlink_metadata(base).is_err() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(base)
            .map_err(|e| format!("cannot create it: {e}"))?;
        // Whatever the umask: `user` must pass through it.
        fs::set_permissions(base, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot set its mode: {e}"))?;
    }
    let meta = fs::symlink_metadata(base).map_err(|e| e.to_string())?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() {
        return Err("not a folder (or a link)".into());
    }
    if meta.uid() != uid {
        return Err(format!("owned by uid {}, not by this user", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err("writable by others".into());
    }
    let target = base.join(name);
    if let Some(blocked) = blocking_parent(&target, user) {
        return Err(format!(
            "{} does not let {} through",
            blocked.display(),
            user.name
        ));
    }
    match fs::symlink_metadata(&target) {
        // The same checkout's data of an earlier run (its link was removed).
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a folder", target.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .mode(0o700)
            .create(&target)
            .or_else(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| format!("cannot create {}: {e}", target.display()))?,
        Err(e) => return Err(format!("cannot examine {}: {e}", target.display())),
    }
    chown(&target, user).map_err(|e| e.to_string())?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot set the mode of {}: {e}", target.display()))?;
    Ok(target)
}

fn is_empty(dir: &Path) -> Result<bool, EmbeddedError> {
    let mut entries =
        fs::read_dir(dir).map_err(io_err(format!("cannot list {}", dir.display())))?;
    Ok(entries.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_named_after_the_project_and_its_path() {
        let a = place_name(Path::new("/root/strata/.strata"));
        let (project, hex) = a.rsplit_once('-').unwrap();
        assert_eq!(project, "strata");
        assert_eq!(hex.len(), 16, "{a}");
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_eq!(a, place_name(Path::new("/root/strata/.strata")));
        assert_ne!(a, place_name(Path::new("/home/x/strata/.strata")));
        assert!(place_name(Path::new("/.strata")).starts_with("strata-"));
        assert!(place_name(Path::new("/root/my app!/.strata")).starts_with("myapp-"));
    }

    /// Only a folder nobody else can write to may hold the data: in a shared
    /// temporary folder, another user could have made `strata-0` first.
    #[test]
    fn a_base_others_can_write_to_or_do_not_own_is_refused() {
        let Ok(Some(user)) = super::super::system::run_as() else {
            eprintln!("skipped: not running as root (or no postgres user)");
            return;
        };
        let base = std::env::temp_dir().join(format!("strata-base-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir(&base).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o777)).unwrap();
        let open = claim(&base, "p-1", &user);
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&base, Some(user.uid), None).unwrap();
        let foreign = claim(&base, "p-1", &user);
        std::os::unix::fs::chown(&base, Some(0), None).unwrap();
        let ours = claim(&base, "p-1", &user);
        let _ = fs::remove_dir_all(&base);
        assert!(open.unwrap_err().contains("writable by others"));
        assert!(foreign.unwrap_err().contains("owned by uid"));
        let target = ours.unwrap();
        assert_eq!(target, base.join("p-1"));
    }
}
