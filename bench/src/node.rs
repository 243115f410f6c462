//! The Strata node under test: this binary re-executed as `strata serve`, in a
//! process of its own.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

/// The first argument that turns this binary into a Strata node.
pub const NODE_ARG: &str = "__node";

/// Runs the `strata` command line with the arguments after [`NODE_ARG`].
pub fn run_as_node() -> ExitCode {
    strata_server::cli::main_from(std::env::args().skip(1))
}

/// A running node process; killed when dropped.
pub struct Node {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
}

impl Node {
    /// Starts `strata serve` on `database_url` and waits until it serves.
    pub fn start(database_url: &str, extra: &[&str]) -> anyhow::Result<Node> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([NODE_ARG, "serve", "--database-url", database_url])
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(extra)
            // Without keys unless the scenario asks for them.
            .args(if extra.contains(&"--auth") {
                &[][..]
            } else {
                &["--auth", "none"][..]
            })
            .env("STRATA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the Strata node")?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // The node's log, kept for when a scenario misbehaves.
        let log_path = std::env::temp_dir().join(format!("strata-bench-node-{}.log", child.id()));
        let mut log = std::fs::File::create(&log_path).ok();
        eprintln!("node log: {}", log_path.display());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(log) = log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(log, "{line}");
                }
                let addr = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .filter(|v| v["fields"]["message"] == "strata is serving")
                    .and_then(|v| v["fields"]["listen"].as_str()?.parse::<SocketAddr>().ok());
                match addr {
                    Some(addr) => {
                        let _ = tx.send(Ok(addr));
                    }
                    None if line.contains("\"ERROR\"") || line.starts_with("error") => {
                        let _ = tx.send(Err(line));
                    }
                    None => {}
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(addr)) => Ok(Node { child, addr }),
            Ok(Err(line)) => bail!("the node failed to start: {line}"),
            Err(_) => bail!("the node did not start within 60 s"),
        }
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
