//! The `strata` command: parse, validate, run.

mod keys;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sqlx::PgPool;

use crate::config::{AuthMode, Cli, Command, DevArgs, LogFormat};
use crate::embedded::{EmbeddedOptions, EmbeddedPostgres};
use crate::startup::{Application, redact, shutdown_signal};
use crate::store;

/// Runs the `strata` command line; the binary's `main` is only this.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs the `strata` command line with `args` (the first is the program name).
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    crate::startup::tune_allocator();
    let cli = Cli::parse_from(args);
    let format = match &cli.command {
        Command::Serve(args) => args.node.log_format,
        Command::Dev(args) => args.node.log_format,
        Command::Migrate(_) | Command::Keys(_) => LogFormat::Text,
    };
    init_tracing(format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => args
            .database
            .resolve()
            .map_err(anyhow::Error::from)
            .and_then(|url| Ok((url, args.node.validate()?)))
            .and_then(|(url, config)| runtime.block_on(serve(config, url))),
        Command::Dev(args) => dev(&runtime, args),
        Command::Migrate(args) => args
            .resolve()
            .map_err(anyhow::Error::from)
            .and_then(|url| runtime.block_on(migrate(url))),
        Command::Keys(args) => runtime.block_on(keys::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", strata_pg::report::describe(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("STRATA_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(config: crate::config::NodeConfig, url: String) -> anyhow::Result<()> {
    let app = Application::build(config, &url).await?;
    app.run_until_stopped(shutdown_signal()).await
}

async fn migrate(url: String) -> anyhow::Result<()> {
    migrated_pool(&url).await?.close().await;
    tracing::info!("the schema is current");
    Ok(())
}

/// A small pool on `url` once the pending migrations are applied (or the
/// database is refused as another application's), as `strata migrate` does.
async fn migrated_pool(url: &str) -> anyhow::Result<PgPool> {
    let pool = store::connect_lazy(url, 2)
        .with_context(|| format!("{} is not a valid PostgreSQL URL", redact(url)))?;
    store::migrate(&pool)
        .await
        .with_context(|| format!("cannot migrate the database at {}", redact(url)))?;
    Ok(pool)
}

fn dev(runtime: &tokio::runtime::Runtime, args: DevArgs) -> anyhow::Result<()> {
    let config = args.node.validate_with(AuthMode::None)?;
    let config_auth = config.security.auth;
    let scheme = if config.serves_tls() { "https" } else { "http" };
    tracing::info!(dir = %args.data_dir.display(), "starting the private PostgreSQL");
    let pg = EmbeddedPostgres::start(EmbeddedOptions::durable(args.data_dir.clone()))?;
    let url = pg.url("strata");
    let died = pg.exited();
    let served = runtime.block_on(async {
        create_database(&pg.url("postgres"), "strata").await?;
        let app = Application::build(config, &url).await?;
        let addr = app.local_addr()?;
        let auth = match config_auth {
            AuthMode::None => "open to anyone on this machine (--auth none, loopback only)",
            AuthMode::Keys => "API keys required (--auth keys; create one with `strata keys create`)",
        };
        eprintln!(
            "\nStrata dev server: {scheme}://{addr}\n  Access: {auth}\n  PostgreSQL: {url} (data in {})\n  Ctrl-C stops both.\n",
            pg.dir().display()
        );
        // Without its PostgreSQL the node can only answer 503: stop too.
        let stop = async {
            tokio::select! {
                () = shutdown_signal() => {}
                () = died => tracing::error!("the private PostgreSQL stopped; stopping Strata"),
            }
        };
        app.run_until_stopped(stop).await
    });
    // Whatever else failed, a dead PostgreSQL is the reason to report.
    pg.check_running()?;
    tracing::info!("stopping the private PostgreSQL");
    let stopped = pg.stop().context("stopping the private PostgreSQL");
    served.and(stopped)
}

/// Creates `name` on the server at `admin_url` unless it exists.
async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("cannot connect to {}", redact(admin_url)))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        // Identifiers cannot be bound as parameters; `name` is a constant here.
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}
