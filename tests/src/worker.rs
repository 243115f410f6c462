use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `account_balances` projection worker. Dropping it kills it.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Child,
    /// Its worker id.
    pub id: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl WorkerProcess {
    /// Starts a worker on `database_url` with extra flags.
    ///
    /// # Panics
    ///
    /// When the binary cannot be started.
    pub fn start(database_url: &str, id: &str, extra: &[&str]) -> WorkerProcess {
        let binary = crate::node_binary().with_file_name("account-balances");
        let mut child = Command::new(&binary)
            .args(["--database-url", database_url, "--worker-id", id])
            .args(extra)
            .env("STRATA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("logs lock").push(line);
            }
        });
        WorkerProcess {
            child,
            id: id.to_owned(),
            logs,
        }
    }

    /// What it logged so far (stderr).
    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs lock").join("\n")
    }

    /// SIGKILL, and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to the process (`SIGSTOP` pauses it, `SIGCONT` resumes it).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, and waits up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let started = std::time::Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
