//! The flags of API.md's "Security" section: who may call, and what is
//! open without credentials.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use clap::{Args, ValueEnum};

use super::ConfigError;

/// Who may call the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// API keys (`strata keys create`), checked on every request.
    Keys,
    /// Anyone who reaches the port: allowed on a loopback address only.
    None,
}

/// The security flags `serve` and `dev` share.
#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// Who may call: `keys` (API keys, see `strata keys create`) or `none` (anyone who
    /// reaches the port; loopback listen addresses only). Default: keys for `serve`, none
    /// for `dev`.
    #[arg(long, env = "STRATA_AUTH", value_enum)]
    pub auth: Option<AuthMode>,
    /// Serve /metrics without credentials (by default it needs the `metrics` scope).
    #[arg(long, env = "STRATA_PUBLIC_METRICS")]
    pub public_metrics: bool,
    /// Requests per second each key may make (a token bucket; beyond it, 429 with
    /// Retry-After). None by default. With --auth none every caller shares one bucket.
    #[arg(long, env = "STRATA_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// Requests a key may make at once above --rate-limit (default: one second's worth).
    #[arg(long, env = "STRATA_RATE_BURST")]
    pub rate_burst: Option<u32>,
    /// Live streams (SSE subscriptions and consumers) each key may hold open; beyond, 429.
    #[arg(long, env = "STRATA_MAX_SSE_PER_KEY")]
    pub max_sse_per_key: Option<usize>,
    /// Live streams the node holds open in all; beyond, 429.
    #[arg(long, env = "STRATA_MAX_SSE", default_value_t = 20_000)]
    pub max_sse: usize,
}

/// The validated security settings of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Security {
    /// Who may call.
    pub auth: AuthMode,
    /// Whether `/metrics` is open.
    pub public_metrics: bool,
    /// What each key, and the node, may use.
    pub quotas: QuotaSettings,
}

/// Rates and open streams allowed (`None`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSettings {
    /// Requests per second per key, and the burst above it.
    pub rate: Option<(NonZeroU32, NonZeroU32)>,
    /// Live streams per key.
    pub sse_per_key: Option<usize>,
    /// Live streams per node.
    pub sse_total: usize,
}

impl SecurityArgs {
    /// The settings, with `default` when `--auth` is not given; `--auth
    /// none` on an address other hosts can reach is refused.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming `--auth`.
    pub fn validate(&self, default: AuthMode, listen: SocketAddr) -> Result<Security, ConfigError> {
        let auth = self.auth.unwrap_or(default);
        if auth == AuthMode::None && !listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                flag: "--auth",
                message: format!(
                    "`none` lets anyone who reaches {listen} read, write and delete every \
                     stream, so it is allowed on a loopback address only. Create a key with \
                     `strata keys create --name NAME --grant admin` and use --auth keys (the \
                     default), or listen on 127.0.0.1"
                ),
            });
        }
        let positive = |flag: &'static str, value: u32| {
            NonZeroU32::new(value).ok_or(ConfigError::Invalid {
                flag,
                message: "must be at least 1".into(),
            })
        };
        let rate = match (self.rate_limit, self.rate_burst) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    flag: "--rate-burst",
                    message: "a burst needs a rate: give --rate-limit too".into(),
                });
            }
            (Some(rate), burst) => Some((
                positive("--rate-limit", rate)?,
                positive("--rate-burst", burst.unwrap_or(rate))?,
            )),
        };
        if self.max_sse_per_key == Some(0) || self.max_sse == 0 {
            return Err(ConfigError::Invalid {
                flag: if self.max_sse == 0 {
                    "--max-sse"
                } else {
                    "--max-sse-per-key"
                },
                message: "must be at least 1".into(),
            });
        }
        Ok(Security {
            auth,
            public_metrics: self.public_metrics,
            quotas: QuotaSettings {
                rate,
                sse_per_key: self.max_sse_per_key,
                sse_total: self.max_sse,
            },
        })
    }
}
