//! The PostgreSQL child process: initdb, a port of its own, a child bound to
//! this process's life, and the log's last lines for messages.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;

use tokio::sync::watch;

use super::system::user_home;
use super::{EmbeddedError, RunAs, io_err};

/// How the child ended: `None` while it runs.
pub(super) type Exit = watch::Receiver<Option<ExitStatus>>;

/// Spawns `command` from a thread that lives as long as the process, so that the
/// child's parent-death signal fires when the process exits, not when some
/// short-lived thread does. Returns the child's pid and how it ended, once it
/// has.
pub(super) fn spawn_bound_to_process(mut command: Command) -> io::Result<(i32, Exit)> {
    let (started_tx, started_rx) = mpsc::channel::<io::Result<i32>>();
    let (exited_tx, exited_rx) = watch::channel(None);
    std::thread::Builder::new()
        .name("embedded-postgres".into())
        .spawn(move || match command.spawn() {
            Ok(mut child) => {
                let pid = child.id() as i32;
                let _ = started_tx.send(Ok(pid));
                // When waiting fails (it cannot for our own child), the
                // child is as good as gone.
                let status = child.wait().unwrap_or_else(|_| ExitStatus::from_raw(-1));
                exited_tx.send_replace(Some(status));
                // Stay alive: the death of this thread must not be the signal.
                loop {
                    std::thread::park();
                }
            }
            Err(e) => {
                let _ = started_tx.send(Err(e));
            }
        })?;
    let pid = started_rx
        .recv()
        .map_err(|_| io::Error::other("the launcher thread died"))??;
    Ok((pid, exited_rx))
}

pub(super) fn configure_child(command: &mut Command, run_as: Option<&RunAs>) {
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid);
        command.env("HOME", user_home(&user.name));
        command.env("USER", &user.name);
    }
    // SAFETY: only async-signal-safe calls (prctl, getppid, kill) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            // Runs after the uid switch, which would otherwise clear it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may already be gone by now.
            if libc::getppid() == 1 {
                libc::kill(libc::getpid(), libc::SIGINT);
            }
            Ok(())
        });
    }
}

pub(super) fn initdb(bin: &Path, data: &Path, run_as: Option<&RunAs>) -> Result<(), EmbeddedError> {
    let mut command = Command::new(bin.join("initdb"));
    command
        .arg("-D")
        .arg(data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])
        .arg("--no-sync")
        .stdin(Stdio::null());
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid);
        command.env("HOME", user_home(&user.name));
    }
    let output = command.output().map_err(io_err(format!(
        "cannot run {}",
        bin.join("initdb").display()
    )))?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        return Err(EmbeddedError::Failed {
            program: "initdb".into(),
            output: last_lines(&text, 20),
        });
    }
    Ok(())
}

/// The pid of a live postmaster on `data`, if any.
pub(super) fn running_postmaster(data: &Path) -> Option<i32> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    alive.then_some(pid)
}

/// Reuses the port of the previous run when it is free, so that a `psql`
/// command printed once keeps working; otherwise picks a free one.
pub(super) fn choose_port(dir: &Path) -> Result<u16, EmbeddedError> {
    let file = dir.join("port");
    let previous = fs::read_to_string(&file)
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok());
    let free = |port: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
    let port = match previous {
        Some(port) if free(port) => port,
        _ => TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(io_err("cannot find a free port"))?,
    };
    fs::write(&file, port.to_string())
        .map_err(io_err(format!("cannot write {}", file.display())))?;
    Ok(port)
}

pub(super) fn tail(path: &Path) -> String {
    last_lines(&fs::read_to_string(path).unwrap_or_default(), 20)
}

pub(super) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
