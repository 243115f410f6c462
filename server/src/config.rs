//! The command line: `strata serve | dev | migrate | keys`, every flag with a
//! `STRATA_…` environment twin, validated before anything starts.

mod keys;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod limits;
mod security;
pub mod tls;

pub use limits::{Limits, Timeouts};

pub use self::keys::{CreateKeyArgs, KeysArgs, KeysCommand, RevokeKeyArgs};
pub use security::{AuthMode, QuotaSettings, Security, SecurityArgs};
pub use tls::{Tls, TlsArgs, TlsError, TlsFiles};

/// Strata: an event store and CQRS server on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `strata`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node against an existing PostgreSQL (applies pending migrations first).
    Serve(ServeArgs),
    /// The embedded default: start a private PostgreSQL in ./.strata/ and serve on it.
    Dev(DevArgs),
    /// Apply the migrations and exit.
    Migrate(DatabaseArgs),
    /// Create, list or revoke API keys (applies pending migrations first).
    Keys(KeysArgs),
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL; `DATABASE_URL` is read too.
    #[arg(long, env = "STRATA_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// The URL from the flag, `STRATA_DATABASE_URL` or `DATABASE_URL`.
    ///
    /// # Errors
    ///
    /// When none is set or it is not a `postgres://` URL.
    pub fn resolve(&self) -> Result<String, ConfigError> {
        let url = self
            .database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .filter(|u| !u.trim().is_empty())
            .ok_or(ConfigError::MissingDatabaseUrl)?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::Invalid {
                flag: "--database-url",
                message: "must start with postgres:// or postgresql://".into(),
            });
        }
        Ok(url)
    }
}

/// `strata serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// How the node runs.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// `strata dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// The folder of the private PostgreSQL's data (created on first run, reused after).
    #[arg(long, env = "STRATA_DATA_DIR", default_value = ".strata")]
    pub data_dir: PathBuf,
    /// How the node runs.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The flags `serve` and `dev` share.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The address to listen on.
    #[arg(long, env = "STRATA_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: String,
    /// This node's id, one per running node (default: a fresh one): 1–100 characters of `A-Z` `a-z` `0-9` `_` `-` `.`
    #[arg(long, env = "STRATA_NODE_ID")]
    pub node_id: Option<String>,
    /// How other nodes and redirected clients reach this node (default: http:// + the listen
    /// address, https:// with --tls-cert).
    #[arg(long, env = "STRATA_ADVERTISED_URL")]
    pub advertised_url: Option<String>,
    /// Lease time-to-live for leaders of subscriptions and projections, in milliseconds.
    #[arg(long, env = "STRATA_LEASE_TTL_MS", default_value_t = 5000)]
    pub lease_ttl_ms: u64,
    /// Most events in one append request.
    #[arg(long, env = "STRATA_MAX_BATCH_EVENTS", default_value_t = 1000)]
    pub max_batch_events: usize,
    /// Largest event (data + metadata), in bytes.
    #[arg(long, env = "STRATA_MAX_EVENT_BYTES", default_value_t = 1 << 20)]
    pub max_event_bytes: usize,
    /// Largest request body, in bytes.
    #[arg(long, env = "STRATA_MAX_BODY_BYTES", default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Request bodies held in memory at once, in bytes; further writers wait.
    #[arg(long, env = "STRATA_MAX_INFLIGHT_BODY_BYTES", default_value_t = 256 << 20)]
    pub max_inflight_body_bytes: usize,
    /// Time a request's headers may take to arrive, from their first byte, in milliseconds.
    #[arg(long, env = "STRATA_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Time a request's body may take to arrive, in milliseconds; slower ones get 408.
    #[arg(long, env = "STRATA_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,
    /// Time a keep-alive connection may sit idle (no request, no byte), in milliseconds.
    #[arg(long, env = "STRATA_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Connections in the database pool.
    #[arg(long, env = "STRATA_POOL_SIZE", default_value_t = 16)]
    pub pool_size: u32,
    /// Concurrent group-commit transactions (each batches many appends).
    #[arg(long, env = "STRATA_COMMITTERS", default_value_t = 3)]
    pub committers: usize,
    /// Idle time after which an SSE stream sends a `: ping` comment, in milliseconds.
    #[arg(long, env = "STRATA_SSE_KEEPALIVE_MS", default_value_t = 15_000)]
    pub sse_keepalive_ms: u64,
    /// How often the live feed looks for new events without being notified, in milliseconds.
    #[arg(long, env = "STRATA_LIVE_POLL_MS", default_value_t = 1_000)]
    pub live_poll_ms: u64,
    /// What this node does with consume, ack, nack, reset and parked calls for a
    /// subscription another node leads: pass them on (proxy) or answer 307 (redirect).
    #[arg(long, env = "STRATA_FOLLOWER_CALLS", value_enum, default_value_t = FollowerCalls::Proxy)]
    pub follower_calls: FollowerCalls,
    /// Bytes of new events held in memory for live subscribers that have not read them
    /// yet; one that falls further behind reads from the database instead.
    #[arg(long, env = "STRATA_LIVE_BUFFER_BYTES", default_value_t = 64 << 20)]
    pub live_buffer_bytes: usize,
    /// Origins whose browser pages may call this API (CORS), comma-separated;
    /// these may send credentials (the session cookie). `*` alone for any
    /// page, never with credentials. None by default.
    #[arg(long, env = "STRATA_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Log format.
    #[arg(long, env = "STRATA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Who may call, and what is open.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// HTTPS: the certificate and key.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// A flag or variable with a value Strata cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No database URL at all.
    #[error(
        "no database: pass --database-url postgres://USER@HOST:PORT/DB (or set DATABASE_URL / \
         STRATA_DATABASE_URL), or run `strata dev` to use a private PostgreSQL"
    )]
    MissingDatabaseUrl,
    /// A value out of range or malformed.
    #[error("{flag}: {message}")]
    Invalid {
        /// The flag (its `STRATA_…` twin is named in the help).
        flag: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// Validated settings of one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// This node's id.
    pub node_id: String,
    /// How others reach this node; `None`: http:// (https:// with TLS) +
    /// the bound address.
    pub advertised_url: Option<String>,
    /// Lease time-to-live.
    pub lease_ttl: Duration,
    /// Request and event size limits.
    pub limits: Limits,
    /// Database pool size.
    pub pool_size: u32,
    /// Concurrent group-commit transactions.
    pub committers: usize,
    /// Idle time after which an SSE stream pings.
    pub sse_keepalive: Duration,
    /// Safety-net poll interval of the live feed.
    pub live_poll: Duration,
    /// Bytes of events held for live subscribers.
    pub live_buffer_bytes: usize,
    /// Leader-only calls for subscriptions another node leads: proxy or 307.
    pub follower_calls: FollowerCalls,
    /// Browser origins allowed to call the API (`*`: any).
    pub cors_origins: Vec<String>,
    /// How long a client may take over its headers, its body, and between
    /// requests.
    pub timeouts: Timeouts,
    /// Who may call, and what is open.
    pub security: Security,
    /// The certificate and key when the node serves HTTPS (`--tls-cert`,
    /// `--tls-key`); `None`: plain HTTP.
    pub tls: Option<Tls>,
}

impl NodeConfig {
    /// Whether the node serves HTTPS (and only HTTPS): a cookie it sets
    /// should then carry `Secure`. Handlers read the same as
    /// [`AppState::serves_tls`](crate::http::AppState::serves_tls).
    pub fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// What a follower does with a call only the leader serves
/// (`http::subscriptions::proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FollowerCalls {
    /// Pass it on to the leader and stream its answer back.
    Proxy,
    /// Answer `307` with the leader's URL.
    Redirect,
}

impl NodeArgs {
    /// Checks every flag and derives the defaults that depend on others,
    /// with `strata serve`'s default of `--auth keys`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the flag and the problem.
    pub fn validate(&self) -> Result<NodeConfig, ConfigError> {
        self.validate_with(AuthMode::Keys)
    }

    /// [`NodeArgs::validate`] with `default_auth` when `--auth` is not given
    /// (`strata dev`: none, on loopback).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the flag and the problem.
    pub fn validate_with(&self, default_auth: AuthMode) -> Result<NodeConfig, ConfigError> {
        let listen: SocketAddr = self.listen.parse().map_err(|_| ConfigError::Invalid {
            flag: "--listen",
            message: format!("{:?} is not an address like 127.0.0.1:7700", self.listen),
        })?;
        let node_id = match &self.node_id {
            Some(id) => {
                strata_core::names::validate_resource_name(id).map_err(|e| {
                    ConfigError::Invalid {
                        flag: "--node-id",
                        message: e.to_string(),
                    }
                })?;
                id.clone()
            }
            None => format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        };
        let advertised_url = match &self.advertised_url {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(url.trim_end_matches('/').to_owned())
            }
            Some(url) => {
                return Err(ConfigError::Invalid {
                    flag: "--advertised-url",
                    message: format!("{url:?} must start with http:// or https://"),
                });
            }
            None => None,
        };
        if self.lease_ttl_ms < 500 || self.lease_ttl_ms > 600_000 {
            return Err(ConfigError::Invalid {
                flag: "--lease-ttl-ms",
                message: format!("{} is out of range 500..=600000", self.lease_ttl_ms),
            });
        }
        let positive = |flag: &'static str, value: usize| {
            if value == 0 {
                Err(ConfigError::Invalid {
                    flag,
                    message: "must be at least 1".into(),
                })
            } else {
                Ok(value)
            }
        };
        let limits = Limits {
            max_batch_events: positive("--max-batch-events", self.max_batch_events)?,
            max_event_bytes: positive("--max-event-bytes", self.max_event_bytes)?,
            max_body_bytes: positive("--max-body-bytes", self.max_body_bytes)?,
            max_inflight_body_bytes: positive(
                "--max-inflight-body-bytes",
                self.max_inflight_body_bytes,
            )?,
        };
        if limits.max_inflight_body_bytes < limits.max_body_bytes {
            return Err(ConfigError::Invalid {
                flag: "--max-inflight-body-bytes",
                message: format!(
                    "{} is below --max-body-bytes ({}): a largest body could never be accepted",
                    limits.max_inflight_body_bytes, limits.max_body_bytes
                ),
            });
        }
        if !(2..=1000).contains(&self.pool_size) {
            return Err(ConfigError::Invalid {
                flag: "--pool-size",
                message: format!("{} is out of range 2..=1000", self.pool_size),
            });
        }
        if !(1..=16).contains(&self.committers) || self.committers as u32 >= self.pool_size {
            return Err(ConfigError::Invalid {
                flag: "--committers",
                message: format!(
                    "{} must be in 1..=16 and below --pool-size ({})",
                    self.committers, self.pool_size
                ),
            });
        }
        if !(10..=300_000).contains(&self.sse_keepalive_ms) {
            return Err(ConfigError::Invalid {
                flag: "--sse-keepalive-ms",
                message: format!("{} is out of range 10..=300000", self.sse_keepalive_ms),
            });
        }
        if !(10..=3_600_000).contains(&self.live_poll_ms) {
            return Err(ConfigError::Invalid {
                flag: "--live-poll-ms",
                message: format!("{} is out of range 10..=3600000", self.live_poll_ms),
            });
        }
        if !((1 << 20)..=(16 << 30)).contains(&self.live_buffer_bytes) {
            return Err(ConfigError::Invalid {
                flag: "--live-buffer-bytes",
                message: format!(
                    "{} is out of range 1048576..=17179869184 (1 MiB to 16 GiB)",
                    self.live_buffer_bytes
                ),
            });
        }
        let millis = |flag: &'static str, value: u64| {
            if (100..=3_600_000).contains(&value) {
                Ok(Duration::from_millis(value))
            } else {
                Err(ConfigError::Invalid {
                    flag,
                    message: format!("{value} is out of range 100..=3600000"),
                })
            }
        };
        let timeouts = Timeouts {
            header: millis("--header-timeout-ms", self.header_timeout_ms)?,
            body: millis("--body-timeout-ms", self.body_timeout_ms)?,
            idle: millis("--idle-timeout-ms", self.idle_timeout_ms)?,
        };
        // `*` never gets credentials and named origins do (`http::cors`):
        // a list with both would silently drop them for the named ones.
        if self.cors_origins.len() > 1 && self.cors_origins.iter().any(|o| o == "*") {
            return Err(ConfigError::Invalid {
                flag: "--cors-origins",
                message: "`*` cannot be listed with named origins: `*` lets any page read \
                          answers without credentials, named origins may send cookies and \
                          `Authorization`; give one or the other"
                    .into(),
            });
        }
        for origin in &self.cors_origins {
            let ok = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && axum::http::HeaderValue::from_str(origin).is_ok());
            if !ok {
                return Err(ConfigError::Invalid {
                    flag: "--cors-origins",
                    message: format!(
                        "{origin:?} is not an origin like https://app.example.com, or *"
                    ),
                });
            }
        }
        let security = self.security.validate(default_auth, listen)?;
        // Last: it reads files, and a flag that is wrong anyway should be
        // reported without waiting on them.
        let tls = self.tls.validate()?;
        Ok(NodeConfig {
            security,
            tls,
            cors_origins: self.cors_origins.clone(),
            sse_keepalive: Duration::from_millis(self.sse_keepalive_ms),
            live_poll: Duration::from_millis(self.live_poll_ms),
            live_buffer_bytes: self.live_buffer_bytes,
            follower_calls: self.follower_calls,
            listen,
            node_id,
            advertised_url,
            lease_ttl: Duration::from_millis(self.lease_ttl_ms),
            limits,
            pool_size: self.pool_size,
            committers: self.committers,
            timeouts,
        })
    }
}

#[cfg(test)]
mod tests;
