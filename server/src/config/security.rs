//! The flags of API.md's "Security" section: who may call, and what is
//! open without credentials.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use clap::{Args, ValueEnum};

use super::ConfigError;
use crate::auth::jwt::{self, JwksSource};

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
    /// Who may call: `keys` (API keys, see `strata keys create`, and JWTs when --jwt-jwks
    /// is given) or `none` (anyone who reaches the port; loopback listen addresses only;
    /// the --jwt-* flags are refused with it). Default: keys for `serve`, none for `dev`.
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
    /// Accept JWT bearer tokens (RS256, ES256, EdDSA) signed by the keys of this JSON Web
    /// Key Set: a file (read at start) or an http(s):// URL (fetched at start, re-read
    /// every 5 minutes and on an unknown key id). Needs --jwt-issuer and --jwt-audience,
    /// and --auth keys: with --auth none the --jwt-* flags are refused.
    #[arg(long, env = "STRATA_JWT_JWKS", value_name = "FILE_OR_URL")]
    pub jwt_jwks: Option<String>,
    /// The `iss` every accepted JWT must carry (with --jwt-jwks).
    #[arg(long, env = "STRATA_JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,
    /// The `aud` every accepted JWT must name (with --jwt-jwks).
    #[arg(long, env = "STRATA_JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,
    /// The JWT claim holding the token's grants, a list like
    /// `[{"scope": "read", "streams": "account-"}]` (with --jwt-jwks; default
    /// strata_grants).
    #[arg(long, env = "STRATA_JWT_GRANTS_CLAIM", value_name = "NAME")]
    pub jwt_grants_claim: Option<String>,
}

/// The validated security settings of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    /// Who may call.
    pub auth: AuthMode,
    /// Whether `/metrics` is open.
    pub public_metrics: bool,
    /// What each key, and the node, may use.
    pub quotas: QuotaSettings,
    /// How JWTs are checked; `None`: bearer tokens are API keys only.
    pub jwt: Option<jwt::Settings>,
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
            jwt: self.jwt(auth)?,
            auth,
            public_metrics: self.public_metrics,
            quotas: QuotaSettings {
                rate,
                sse_per_key: self.max_sse_per_key,
                sse_total: self.max_sse,
            },
        })
    }

    /// The JWT settings: none without `--jwt-jwks`; with it, an issuer and
    /// an audience are required, and `--auth none` is refused (it would
    /// let everyone in whatever the token).
    fn jwt(&self, auth: AuthMode) -> Result<Option<jwt::Settings>, ConfigError> {
        fn given(value: &Option<String>) -> Option<&str> {
            value.as_deref().map(str::trim)
        }
        let others = [
            ("--jwt-issuer", given(&self.jwt_issuer)),
            ("--jwt-audience", given(&self.jwt_audience)),
            ("--jwt-grants-claim", given(&self.jwt_grants_claim)),
        ];
        let Some(jwks) = given(&self.jwt_jwks) else {
            if let Some((flag, _)) = others.iter().find(|(_, value)| value.is_some()) {
                return Err(ConfigError::Invalid {
                    flag,
                    message: "has no effect without --jwt-jwks (the key set that signs the \
                              tokens): give --jwt-jwks FILE_OR_URL too, or drop it"
                        .into(),
                });
            }
            return Ok(None);
        };
        if auth == AuthMode::None {
            return Err(ConfigError::Invalid {
                flag: "--jwt-jwks",
                message: "--auth none lets every caller in without credentials, so JWTs would \
                          change nothing: use --auth keys to require keys or JWTs, or drop the \
                          --jwt-* flags"
                    .into(),
            });
        }
        let jwks = JwksSource::parse(jwks).map_err(|message| ConfigError::Invalid {
            flag: "--jwt-jwks",
            message,
        })?;
        let required = |flag: &'static str, value: Option<&str>, what: &str| match value {
            Some(value) if !value.is_empty() => Ok(value.to_owned()),
            _ => Err(ConfigError::Invalid {
                flag,
                message: format!(
                    "is required with --jwt-jwks: the {what} every accepted token must carry \
                     (a token for another service must not be taken here)"
                ),
            }),
        };
        let issuer = required("--jwt-issuer", others[0].1, "issuer (`iss`)")?;
        let audience = required("--jwt-audience", others[1].1, "audience (`aud`)")?;
        let grants_claim = match others[2].1 {
            None => jwt::DEFAULT_GRANTS_CLAIM.to_owned(),
            Some("") => {
                return Err(ConfigError::Invalid {
                    flag: "--jwt-grants-claim",
                    message: format!(
                        "is empty: name the claim that holds the grants, or leave the flag \
                         out for `{}`",
                        jwt::DEFAULT_GRANTS_CLAIM
                    ),
                });
            }
            Some(name) => name.to_owned(),
        };
        Ok(Some(jwt::Settings {
            jwks,
            issuer,
            audience,
            grants_claim,
        }))
    }
}
