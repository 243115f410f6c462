use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::Api;

/// The `strata` binary the tests run (`strata-node`, built by this package;
/// `STRATA_NODE_BIN` overrides it).
pub fn node_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("STRATA_NODE_BIN") {
        return path.into();
    }
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe.parent().expect("deps folder");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile folder")
    } else {
        dir
    };
    let path = dir.join("strata-node");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so that it is built",
        path.display()
    );
    path
}

/// Runs `strata ARGS` to its end, for a command that stops by itself (an
/// error at start, `migrate`, `--help`), with `DATABASE_URL` cleared.
///
/// # Panics
///
/// When it is still running after `timeout`.
pub async fn run_to_end(args: &[&str], timeout: Duration) -> std::process::Output {
    let output = tokio::process::Command::new(node_binary())
        .args(args)
        .env("DATABASE_URL", "")
        .env("STRATA_LOG", "info")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(timeout, output)
        .await
        .unwrap_or_else(|_| panic!("`strata {}` still ran after {timeout:?}", args.join(" ")))
        .expect("running strata-node")
}

/// How to start a node: `strata serve` with the given flags.
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    /// `serve --database-url URL`, or `dev --data-dir DIR` when `None`.
    database_url: Option<String>,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    current_dir: Option<PathBuf>,
}

impl NodeBuilder {
    /// A node on `database_url` with test-friendly defaults (free port, JSON
    /// logs, a small pool).
    pub fn new(database_url: &str) -> Self {
        NodeBuilder {
            database_url: Some(database_url.to_owned()),
            data_dir: None,
            listen: None,
            args: Vec::new(),
            env: Vec::new(),
            current_dir: None,
        }
    }

    /// `strata dev` with its private PostgreSQL in `data_dir`.
    pub fn dev(data_dir: &std::path::Path) -> Self {
        NodeBuilder {
            database_url: None,
            data_dir: Some(data_dir.to_owned()),
            listen: None,
            args: Vec::new(),
            env: Vec::new(),
            current_dir: None,
        }
    }

    /// Adds command-line flags.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs the process in `dir` (a checkout, say), against which a relative
    /// data folder such as `.strata` is resolved.
    pub fn current_dir(mut self, dir: &std::path::Path) -> Self {
        self.current_dir = Some(dir.to_owned());
        self
    }

    /// Starts the process and waits until it serves.
    ///
    /// # Panics
    ///
    /// When it exits or does not serve within 60 seconds (with its logs).
    pub async fn start(self) -> StrataNode {
        tokio::task::spawn_blocking(move || StrataNode::spawn(self))
            .await
            .expect("starting a node")
    }
}

/// `--auth none` for a `serve` node whose test does not choose (tests of
/// other things run without keys, on loopback); nothing for `dev`, whose
/// default that is anyway, or when the test chose.
fn default_auth(builder: &NodeBuilder) -> &'static [&'static str] {
    let chose = builder
        .args
        .iter()
        .any(|a| a == "--auth" || a.starts_with("--auth="))
        || builder.env.iter().any(|(k, _)| k == "STRATA_AUTH");
    if builder.database_url.is_some() && !chose {
        &["--auth", "none"]
    } else {
        &[]
    }
}

/// A running `strata serve` process. Dropping it kills the process.
#[derive(Debug)]
pub struct StrataNode {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    builder: NodeBuilder,
    exit: Option<ExitStatus>,
}

impl StrataNode {
    /// Starts a node with the default settings on `database_url`.
    pub async fn start(database_url: &str) -> StrataNode {
        NodeBuilder::new(database_url).start().await
    }

    fn spawn(builder: NodeBuilder) -> StrataNode {
        let mut command = Command::new(node_binary());
        match (&builder.database_url, &builder.data_dir) {
            (Some(url), _) => command.arg("serve").args(["--database-url", url]),
            (None, Some(dir)) => command.arg("dev").arg("--data-dir").arg(dir),
            (None, None) => unreachable!("a builder has a database URL or a data folder"),
        };
        command
            .args([
                "--listen",
                builder.listen.as_deref().unwrap_or("127.0.0.1:0"),
                "--log-format",
                "json",
                "--pool-size",
                "6",
            ])
            .args(&builder.args)
            .args(default_auth(&builder))
            .env("STRATA_LOG", "info,strata_server=debug,sqlx=warn")
            .envs(builder.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(dir) = &builder.current_dir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().expect("spawning strata-node");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = serving_address(&line) {
                        let _ = addr_tx.send(addr);
                    }
                    logs.lock().expect("logs lock").push(line);
                }
            });
        }
        let started = Instant::now();
        let addr = loop {
            if let Ok(addr) = addr_rx.recv_timeout(Duration::from_millis(50)) {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "strata-node exited with {status} before serving; its log:\n{}",
                    logs.lock().expect("logs lock").join("\n")
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!(
                    "strata-node did not serve within 60 s; its log:\n{}",
                    logs.lock().expect("logs lock").join("\n")
                );
            }
        };
        StrataNode {
            child,
            addr,
            logs,
            builder,
            exit: None,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client for this node.
    pub fn api(&self) -> Api {
        Api::new(&self.url())
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything the node logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs lock").join("\n")
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().expect("waiting for the node") {
                self.exit = Some(status);
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
    }

    /// SIGTERM, and waits up to `timeout` for a clean exit.
    ///
    /// # Panics
    ///
    /// When the process does not exit in time.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.stop_with(libc::SIGTERM, timeout).await
    }

    /// Sends `signal` and waits up to `timeout` for the process to exit.
    ///
    /// # Panics
    ///
    /// When the process does not exit in time.
    pub async fn stop_with(&mut self, signal: i32, timeout: Duration) -> ExitStatus {
        self.signal(signal);
        match self.wait_exit(timeout).await {
            Some(status) => status,
            None => panic!(
                "the node did not exit within {timeout:?} of signal {signal}; its log:\n{}",
                self.logs()
            ),
        }
    }

    /// A new process with the same settings on the same address, so that
    /// clients holding its URL reconnect to it.
    pub async fn restart_same_address(&mut self) {
        if self.exit.is_none() {
            self.kill();
        }
        let mut builder = self.builder.clone();
        builder.listen = Some(self.addr.to_string());
        *self = builder.start().await;
    }

    /// A new process with the same settings (a fresh port).
    pub async fn restart(&mut self) {
        if self.exit.is_none() {
            self.kill();
        }
        *self = self.builder.clone().start().await;
    }
}

impl Drop for StrataNode {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address in the node's "strata is serving" JSON log line.
fn serving_address(line: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != "strata is serving" {
        return None;
    }
    fields.get("listen")?.as_str()?.parse().ok()
}
