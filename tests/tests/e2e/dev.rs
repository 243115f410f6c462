//! `strata dev`: a private PostgreSQL from the system's binaries, no database
//! needed; data kept between runs; Ctrl-C stops both. And what the `strata`
//! command says when it cannot start.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use strata_tests::{NodeBuilder, TestDatabase};

#[tokio::test]
async fn dev_serves_on_a_private_postgres_and_keeps_data_across_runs() {
    let dir = std::env::temp_dir().join(format!("strata-dev-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let builder = NodeBuilder::dev(&dir).env("DATABASE_URL", "");

    let mut node = builder.clone().start().await;
    let r = node
        .api()
        .append(
            "dev-1",
            json!("no_stream"),
            json!([{"type": "E", "data": 1}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // Ctrl-C.
    let status = node.stop_with(libc::SIGINT, Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status}; log:\n{}", node.logs());
    assert!(
        !dir.join("pgdata/postmaster.pid").exists(),
        "PostgreSQL is still running after strata dev stopped"
    );

    let mut node = builder.start().await;
    let r = node.api().get("/streams/dev-1").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the second run lost the data: {:?}",
        r.body
    );
    assert_eq!(r.body["version"], 1);
    let status = node.terminate(Duration::from_secs(30)).await;
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 10, item 14: `strata dev` went on after its private PostgreSQL died
/// (kill -9 of the postmaster), answering 503 forever. Now it says so and
/// exits non-zero.
#[tokio::test]
async fn dev_stops_when_its_private_postgres_dies() {
    let dir = std::env::temp_dir().join(format!("strata-dev-death-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut node = NodeBuilder::dev(&dir).env("DATABASE_URL", "").start().await;
    let pid: i32 = std::fs::read_to_string(dir.join("pgdata/postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) of the postmaster the node started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let status = node.wait_exit(Duration::from_secs(30)).await;
    let logs = node.logs();
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.unwrap_or_else(|| panic!("strata dev kept running; log:\n{logs}"));
    assert!(!status.success(), "exit {status}; log:\n{logs}");
    assert!(
        logs.contains("the private PostgreSQL stopped"),
        "it says why: {logs}"
    );
}

/// Runs `strata ARGS` to its end: whether it succeeded, and its `error:` line.
async fn strata_error(args: &[&str]) -> (bool, String) {
    let output = strata_tests::run_to_end(args, Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
        .to_owned();
    (output.status.success(), error)
}

/// Issue 10 (smaller items): error chains repeated their causes
/// (`cannot create afile: File exists: File exists`), since an error that
/// writes its cause into its message was printed with that cause again.
#[tokio::test]
async fn an_error_says_each_cause_once() {
    let file = std::env::temp_dir().join(format!("strata-dev-file-{}", std::process::id()));
    std::fs::write(&file, "not a folder").unwrap();
    let (ok, error) = strata_error(&["dev", "--data-dir", file.to_str().unwrap()]).await;
    let _ = std::fs::remove_file(&file);
    assert!(!ok);
    assert!(error.contains("cannot create"), "{error}");
    assert_eq!(error.matches("File exists").count(), 1, "{error}");
    let (ok, error) = strata_error(&[
        "migrate",
        "--database-url",
        "postgres://postgres@127.0.0.1:5432/strata_no_such_database",
    ])
    .await;
    assert!(!ok);
    assert_eq!(error.matches("does not exist").count(), 1, "{error}");
}

/// Issue 10 (smaller items): migrating a database that holds another
/// application's `events` table failed with the bare "relation already
/// exists" (three times) and left `_sqlx_migrations` behind. Now it changes
/// nothing and says that Strata wants a database of its own.
#[tokio::test]
async fn migrating_a_database_of_another_application_changes_nothing() {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    sqlx::query("CREATE TABLE events (id int)")
        .execute(&pool)
        .await
        .unwrap();
    let (ok, error) = strata_error(&["migrate", "--database-url", db.url()]).await;
    assert!(!ok);
    assert!(
        error.contains("events") && error.contains("of its own"),
        "the error names the table and what to do: {error}"
    );
    let left: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        left, None,
        "the failed migration left _sqlx_migrations behind"
    );
}

/// Issue 10 (smaller items): the help of `--node-id` lost the `.` it accepts
/// (clap drops a summary's final period).
#[tokio::test]
async fn the_node_id_help_names_every_character_allowed() {
    let output = strata_tests::run_to_end(&["serve", "--help"], Duration::from_secs(30)).await;
    let help = String::from_utf8_lossy(&output.stdout);
    let node_id = help
        .split("--node-id")
        .nth(1)
        .and_then(|rest| rest.split("\n      --").next())
        .unwrap_or_else(|| panic!("no --node-id in:\n{help}"));
    for allowed in ["A-Z", "a-z", "0-9", "_", "-", "."] {
        assert!(
            node_id.contains(&format!("`{allowed}`")),
            "{allowed} missing from: {node_id}"
        );
    }
}

/// A checkout-like folder, `<tmp>/…/home/proj`, whose `home` (mode 0700) the
/// unprivileged PostgreSQL user cannot pass through: `/root/strata` in small.
/// Removed when dropped, with the folder its `.strata` links to, if any.
struct Checkout {
    root: std::path::PathBuf,
    home: std::path::PathBuf,
    proj: std::path::PathBuf,
}

impl Checkout {
    fn new(tag: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("strata-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let home = root.join("home");
        let proj = home.join("proj");
        std::fs::create_dir_all(&proj).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        Checkout { root, home, proj }
    }

    fn home_mode(&self) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&self.home).unwrap().permissions().mode() & 0o777
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Ok(target) = std::fs::read_link(self.proj.join(".strata")) {
            let _ = std::fs::remove_dir_all(target);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Only root runs PostgreSQL as another user; as anyone else there is nothing
/// to relocate.
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: not running as root");
    }
    root
}

/// Issue 11, item 3: cloned under /root and run as root, `strata dev` stopped,
/// since PostgreSQL (run as `postgres`) could not reach ./.strata. Now the
/// cluster lives where that user can reach it, ./.strata links there, and a
/// second run finds the same data.
#[tokio::test]
async fn dev_as_root_in_a_closed_home_keeps_its_data_where_postgres_can_reach_it() {
    if !running_as_root() {
        return;
    }
    let checkout = Checkout::new("dev-home");
    let builder = NodeBuilder::dev(std::path::Path::new(".strata"))
        .current_dir(&checkout.proj)
        .env("DATABASE_URL", "");

    let mut node = builder.clone().start().await;
    let r = node
        .api()
        .append(
            "home-1",
            json!("no_stream"),
            json!([{"type": "E", "data": 1}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let link = checkout.proj.join(".strata");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "./.strata is not a link; log:\n{}",
        node.logs()
    );
    let target = std::fs::read_link(&link).unwrap();
    assert!(
        !target.starts_with(&checkout.root),
        "the data stayed out of reach: {}",
        target.display()
    );
    assert!(
        target.join("pgdata/PG_VERSION").exists(),
        "no cluster in {}",
        target.display()
    );
    let logs = node.logs();
    assert!(
        logs.contains("cannot reach")
            && logs.contains(&target.display().to_string())
            && logs.contains(&checkout.home.display().to_string()),
        "the log says where the data lives and why:\n{logs}"
    );
    assert_eq!(checkout.home_mode(), 0o700, "the home folder was opened up");
    let status = node.stop_with(libc::SIGINT, Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status}; log:\n{}", node.logs());

    let mut node = builder.start().await;
    let r = node.api().get("/streams/home-1").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the second run lost the data: {:?}",
        r.body
    );
    assert_eq!(r.body["version"], 1);
    assert_eq!(std::fs::read_link(&link).unwrap(), target);
    let status = node.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status}; log:\n{}", node.logs());
}

/// Issue 11, item 3: a data folder out of the PostgreSQL user's reach that
/// already holds files is not moved; the error names the folder in the way.
#[tokio::test]
async fn dev_as_root_leaves_an_unreachable_data_folder_with_files_and_names_the_blocking_parent() {
    if !running_as_root() {
        return;
    }
    let checkout = Checkout::new("dev-full");
    let data = checkout.proj.join(".strata");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("notes.txt"), "mine").unwrap();

    let (ok, error) = strata_error(&["dev", "--data-dir", data.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(
        error.contains(&format!("the folder {} does not", checkout.home.display())),
        "the error names the blocking folder: {error}"
    );
    assert!(
        !std::fs::symlink_metadata(&data)
            .unwrap()
            .file_type()
            .is_symlink()
            && std::fs::read_to_string(data.join("notes.txt")).unwrap() == "mine",
        "the folder with files was moved or changed"
    );
    assert_eq!(checkout.home_mode(), 0o700, "the home folder was opened up");
}
