//! A private PostgreSQL started from the system's own binaries: the engine of
//! `strata dev` and of the test harness.
//!
//! It runs `initdb` once in a data folder of its own, then `postgres` as a child
//! process listening on 127.0.0.1 only. PostgreSQL refuses to run as root, so a
//! root caller runs it as the `postgres` user (or `STRATA_PG_USER`). The child
//! is bound to the life of this process: if Strata dies, the kernel tells
//! PostgreSQL to shut down (`PR_SET_PDEATHSIG`), so nothing is left behind.
//!
//! ```no_run
//! use strata_server::embedded::{EmbeddedOptions, EmbeddedPostgres};
//!
//! let pg = EmbeddedPostgres::start(EmbeddedOptions::durable(".strata".into()))?;
//! println!("PostgreSQL at {}", pg.url("postgres"));
//! pg.stop()?;
//! # Ok::<(), strata_server::embedded::EmbeddedError>(())
//! ```

use std::ffi::OsString;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What went wrong starting or stopping the private PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No `initdb`/`postgres` binaries were found.
    #[error(
        "PostgreSQL's server programs (initdb, postgres) were not found on PATH, in \
         STRATA_PG_BIN or under /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: \
         `apt install postgresql`; Fedora: `dnf install postgresql-server`; macOS: \
         `brew install postgresql@16`), point STRATA_PG_BIN at the folder that holds them, \
         or run `strata serve --database-url postgres://…` against a PostgreSQL you already have"
    )]
    BinariesNotFound,
    /// Running as root and no unprivileged user to run PostgreSQL as.
    #[error(
        "PostgreSQL refuses to run as root and there is no user {user:?} to run it as; \
         create one (`useradd --system {user}`), name another with STRATA_PG_USER, or run \
         Strata as an ordinary user"
    )]
    NoUnprivilegedUser {
        /// The user looked for.
        user: String,
    },
    /// The data folder cannot be reached by the user PostgreSQL runs as.
    #[error(
        "PostgreSQL runs as user {user:?}, which cannot reach {dir}: a parent folder is not \
         searchable by others. Choose a data folder it can reach (e.g. `--data-dir /tmp/strata`) \
         or set DATABASE_URL to use an existing PostgreSQL"
    )]
    Unreachable {
        /// The user PostgreSQL runs as.
        user: String,
        /// The folder it cannot reach.
        dir: PathBuf,
    },
    /// Another PostgreSQL is already running on this data folder.
    #[error(
        "another PostgreSQL (pid {pid}) is already running on {dir}; is another `strata dev` \
         running here? Stop it first, or choose another --data-dir"
    )]
    AlreadyRunning {
        /// Its pid.
        pid: i32,
        /// The data folder.
        dir: PathBuf,
    },
    /// A PostgreSQL program failed.
    #[error("{program} failed; its output ends with:\n{output}")]
    Failed {
        /// The program that failed.
        program: String,
        /// The last lines of what it printed.
        output: String,
    },
    /// PostgreSQL did not become ready in time.
    #[error("PostgreSQL did not become ready within {0:?}; see {1}")]
    Timeout(Duration, PathBuf),
    /// A file system or process error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedError {
    let context = context.into();
    move |source| EmbeddedError::Io { context, source }
}

/// How to start the private PostgreSQL.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The folder that holds the cluster (`pgdata/`), its log and its port.
    pub dir: PathBuf,
    /// Durable (fsync on) or fast (fsync off, for throwaway test clusters).
    pub durable: bool,
    /// `max_connections` of the cluster.
    pub max_connections: u32,
}

impl EmbeddedOptions {
    /// A durable cluster for `strata dev`: nothing acknowledged is lost.
    pub fn durable(dir: PathBuf) -> Self {
        EmbeddedOptions {
            dir,
            durable: true,
            max_connections: 200,
        }
    }

    /// A throwaway cluster for tests: fsync off, many connections.
    pub fn throwaway(dir: PathBuf) -> Self {
        EmbeddedOptions {
            dir,
            durable: false,
            max_connections: 500,
        }
    }
}

/// A running private PostgreSQL. Stop it with [`EmbeddedPostgres::stop`];
/// dropping it leaves it running until this process exits.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    dir: PathBuf,
    port: u16,
    pid: i32,
    exited: mpsc::Receiver<()>,
}

struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

impl EmbeddedPostgres {
    /// Initialises the cluster if needed, starts PostgreSQL and waits until it
    /// accepts connections.
    ///
    /// # Errors
    ///
    /// [`EmbeddedError`] with a message saying what to do: binaries missing,
    /// running as root without a `postgres` user, another instance running, …
    pub fn start(options: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let bin = find_binaries()?;
        let run_as = run_as()?;
        fs::create_dir_all(&options.dir)
            .map_err(io_err(format!("cannot create {}", options.dir.display())))?;
        let dir = options
            .dir
            .canonicalize()
            .map_err(io_err(format!("cannot resolve {}", options.dir.display())))?;
        let data = dir.join("pgdata");
        if let Some(user) = &run_as {
            check_reachable(&dir, user)?;
            chown(&dir, user)?;
        }
        if !data.join("PG_VERSION").exists() {
            initdb(&bin, &data, run_as.as_ref())?;
        }
        if let Some(pid) = running_postmaster(&data) {
            return Err(EmbeddedError::AlreadyRunning { pid, dir: data });
        }
        let port = choose_port(&dir)?;
        let log_path = dir.join("postgresql.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("cannot open {}", log_path.display())))?;
        if let Some(user) = &run_as {
            chown(&log_path, user)?;
        }

        let mut command = Command::new(bin.join("postgres"));
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args([
                "-c",
                &format!("max_connections={}", options.max_connections),
            ])
            .args(["-c", "shared_buffers=128MB"]);
        if !options.durable {
            command.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        command
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(io_err("cannot share the log file"))?,
            )
            .stderr(log)
            // Ctrl-C in a terminal goes to the whole foreground process group;
            // keep PostgreSQL out of it so that Strata shuts it down in order.
            .process_group(0);
        configure_child(&mut command, run_as.as_ref());

        let (child, exited) = spawn_bound_to_process(command).map_err(io_err(format!(
            "cannot start {}",
            bin.join("postgres").display()
        )))?;
        let pg = EmbeddedPostgres {
            dir,
            port,
            pid: child,
            exited,
        };
        pg.wait_ready(&data, &log_path)?;
        Ok(pg)
    }

    fn wait_ready(&self, data: &Path, log_path: &Path) -> Result<(), EmbeddedError> {
        let limit = Duration::from_secs(60);
        let started = Instant::now();
        loop {
            if self.exited.try_recv().is_ok() {
                return Err(EmbeddedError::Failed {
                    program: "postgres".into(),
                    output: tail(log_path),
                });
            }
            let ready = fs::read_to_string(data.join("postmaster.pid"))
                .map(|pid| pid.lines().nth(7).map(str::trim) == Some("ready"))
                .unwrap_or(false);
            if ready && TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(EmbeddedError::Timeout(limit, log_path.to_owned()));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The TCP port PostgreSQL listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder that holds the cluster.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A connection URL for `database` as the `postgres` superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Shuts PostgreSQL down (fast shutdown: sessions are closed, everything
    /// committed is kept) and waits for it to exit.
    ///
    /// # Errors
    ///
    /// When it does not exit within 30 seconds even after `SIGQUIT`.
    pub fn stop(self) -> Result<(), EmbeddedError> {
        // SAFETY: kill(2) with a pid we started; no memory is involved.
        unsafe { libc::kill(self.pid, libc::SIGINT) };
        if self.exited.recv_timeout(Duration::from_secs(30)).is_ok() {
            return Ok(());
        }
        // SAFETY: as above.
        unsafe { libc::kill(self.pid, libc::SIGQUIT) };
        self.exited
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| EmbeddedError::Timeout(Duration::from_secs(40), self.dir.clone()))
    }
}

/// Spawns `command` from a thread that lives as long as the process, so that the
/// child's parent-death signal fires when the process exits, not when some
/// short-lived thread does. Returns the child's pid and a channel that yields
/// once the child has exited.
fn spawn_bound_to_process(mut command: Command) -> io::Result<(i32, mpsc::Receiver<()>)> {
    let (started_tx, started_rx) = mpsc::channel::<io::Result<i32>>();
    let (exited_tx, exited_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("embedded-postgres".into())
        .spawn(move || match command.spawn() {
            Ok(mut child) => {
                let pid = child.id() as i32;
                let _ = started_tx.send(Ok(pid));
                let _ = wait(&mut child);
                let _ = exited_tx.send(());
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

fn wait(child: &mut Child) -> io::Result<()> {
    child.wait().map(|_| ())
}

fn configure_child(command: &mut Command, run_as: Option<&RunAs>) {
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

fn initdb(bin: &Path, data: &Path, run_as: Option<&RunAs>) -> Result<(), EmbeddedError> {
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
fn running_postmaster(data: &Path) -> Option<i32> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    alive.then_some(pid)
}

/// Reuses the port of the previous run when it is free, so that a `psql`
/// command printed once keeps working; otherwise picks a free one.
fn choose_port(dir: &Path) -> Result<u16, EmbeddedError> {
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
fn run_as() -> Result<Option<RunAs>, EmbeddedError> {
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

fn user_home(name: &str) -> OsString {
    fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() >= 6 && fields[0] == name).then(|| OsString::from(fields[5]))
        })
        .unwrap_or_else(|| "/tmp".into())
}

/// Every ancestor of `dir` must be searchable by others, or PostgreSQL running
/// as another user cannot reach its data.
fn check_reachable(dir: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(EmbeddedError::Unreachable {
                user: user.name.clone(),
                dir: dir.to_owned(),
            });
        }
    }
    Ok(())
}

fn chown(path: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(io_err(format!(
        "cannot hand {} to {}",
        path.display(),
        user.name
    )))
}

fn tail(path: &Path) -> String {
    last_lines(&fs::read_to_string(path).unwrap_or_default(), 20)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
