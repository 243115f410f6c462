//! A private PostgreSQL started from the system's own binaries: the engine of
//! `strata dev` and of the test harness.
//!
//! It runs `initdb` once in a data folder of its own, then `postgres` as a child
//! process listening on 127.0.0.1 only. PostgreSQL refuses to run as root, so a
//! root caller runs it as the `postgres` user (or `STRATA_PG_USER`); when that
//! user cannot reach a new data folder (a checkout under `/root`), the cluster
//! lives under `/var/lib/strata/` and the data folder links there. The child
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

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod location;
mod process;
mod system;

use process::{
    Exit, choose_port, configure_child, initdb, running_postmaster, spawn_bound_to_process, tail,
};
pub use system::find_binaries;
use system::{chown, run_as};

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
    /// The data folder cannot be reached by the user PostgreSQL runs as, and
    /// it cannot be moved out of the way (it already holds files).
    #[error(
        "PostgreSQL runs as user {user:?}, which cannot reach {dir}: the folder {blocked} does \
         not let that user through. Strata places a new or empty data folder where that user \
         can reach it, but {dir} is not one, and Strata does not loosen your folders' \
         permissions. Choose a data folder it can reach (e.g. `--data-dir /var/lib/strata/data`), \
         move away or remove {dir} if nothing in it is needed, or set DATABASE_URL to use an \
         existing PostgreSQL",
        dir = .dir.display(),
        blocked = .blocked.display()
    )]
    Unreachable {
        /// The user PostgreSQL runs as.
        user: String,
        /// The folder it cannot reach.
        dir: PathBuf,
        /// The parent folder that stops it.
        blocked: PathBuf,
    },
    /// The data folder is out of reach of the user PostgreSQL runs as, and no
    /// folder could be made for the data instead.
    #[error(
        "PostgreSQL runs as user {user:?}, which cannot reach {dir} ({blocked} does not let it \
         through), and no folder it can reach could be made for the data instead ({refused}). \
         Choose a data folder it can reach with --data-dir, or set DATABASE_URL to use an \
         existing PostgreSQL",
        dir = .dir.display(),
        blocked = .blocked.display()
    )]
    NoDataPlace {
        /// The user PostgreSQL runs as.
        user: String,
        /// The folder it cannot reach.
        dir: PathBuf,
        /// The parent folder that stops it.
        blocked: PathBuf,
        /// Each place tried, and why it could not be used.
        refused: String,
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
    /// PostgreSQL stopped while Strata was using it.
    #[error(
        "the private PostgreSQL stopped unexpectedly ({status}), so Strata stopped too; the end \
         of its log ({log}):\n{output}\nRun `strata dev` again to start both",
        log = .log.display()
    )]
    Died {
        /// How it ended.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
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

pub(super) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedError {
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
    exited: Exit,
}

pub(super) struct RunAs {
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
        let dir = match &run_as {
            // The folder, or the place it links to, that `user` can reach.
            Some(user) => {
                let dir = location::prepare(&options.dir, user)?;
                chown(&dir, user)?;
                dir
            }
            None => {
                fs::create_dir_all(&options.dir)
                    .map_err(io_err(format!("cannot create {}", options.dir.display())))?;
                options
                    .dir
                    .canonicalize()
                    .map_err(io_err(format!("cannot resolve {}", options.dir.display())))?
            }
        };
        let data = dir.join("pgdata");
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
            if self.exited.borrow().is_some() {
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

    /// Completes when PostgreSQL exits, whatever the reason: a
    /// [`EmbeddedPostgres::stop`], a crash, a kill.
    pub fn exited(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut exited = self.exited.clone();
        async move {
            // An error: the launcher thread is gone, and PostgreSQL with it.
            let _ = exited.wait_for(Option::is_some).await;
        }
    }

    /// `Ok` while PostgreSQL runs; [`EmbeddedError::Died`] with the end of
    /// its log once it has exited.
    ///
    /// # Errors
    ///
    /// When PostgreSQL is no longer running.
    pub fn check_running(&self) -> Result<(), EmbeddedError> {
        let Some(status) = *self.exited.borrow() else {
            return Ok(());
        };
        let log = self.dir.join("postgresql.log");
        Err(EmbeddedError::Died {
            status,
            output: tail(&log),
            log,
        })
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
        let exited_within = |limit: Duration| {
            let started = Instant::now();
            while started.elapsed() < limit {
                if self.exited.borrow().is_some() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            false
        };
        if self.exited.borrow().is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) with a pid we started; no memory is involved.
        unsafe { libc::kill(self.pid, libc::SIGINT) };
        if exited_within(Duration::from_secs(30)) {
            return Ok(());
        }
        // SAFETY: as above.
        unsafe { libc::kill(self.pid, libc::SIGQUIT) };
        if exited_within(Duration::from_secs(10)) {
            return Ok(());
        }
        Err(EmbeddedError::Timeout(
            Duration::from_secs(40),
            self.dir.clone(),
        ))
    }
}
