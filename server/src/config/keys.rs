//! `strata keys create | list | revoke`: API keys managed on the database
//! directly, so that an operator can make the first admin key before any
//! node serves.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use clap::{Args, Subcommand};
use strata_core::auth::{CreateKey, Grant};

use super::{ConfigError, DatabaseArgs};
use crate::auth::keys::{self, InvalidKey};

/// `strata keys`.
#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    /// What to do with the keys.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// The subcommands of `strata keys`.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its token is shown once, alone on the last line.
    Create(CreateKeyArgs),
    /// List the keys: names, grants, creation, expiry and revocation (never a token).
    List(DatabaseArgs),
    /// Revoke a key: every node refuses it within 2 seconds.
    Revoke(RevokeKeyArgs),
}

/// `strata keys create`.
#[derive(Debug, Clone, Args)]
pub struct CreateKeyArgs {
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The key's name, for the audit trail and the logs: 1–100 characters of `A-Z` `a-z` `0-9` `_` `-` `.`
    #[arg(long)]
    pub name: String,
    /// What the key may do, over the streams starting with PREFIX (none: every
    /// stream); repeat for more. Scopes: read, write, delete, subscribe,
    /// metrics, admin.
    #[arg(long = "grant", value_name = "SCOPE[:PREFIX]", required = true)]
    pub grants: Vec<Grant>,
    /// How long the key works (`30d`, `12h`, `1h 30m`); by default it does not expire.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub expires_in: Option<Duration>,
}

impl CreateKeyArgs {
    /// The key to create, checked as of `now`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the flag at fault.
    pub fn to_request(&self, now: DateTime<Utc>) -> Result<CreateKey, ConfigError> {
        let expires_at = match self.expires_in {
            None => None,
            Some(duration) => Some(
                TimeDelta::from_std(duration)
                    .ok()
                    .and_then(|delta| now.checked_add_signed(delta))
                    .ok_or_else(|| ConfigError::Invalid {
                        flag: "--expires-in",
                        message: format!(
                            "{} is too far in the future; give at most some years",
                            humantime::format_duration(duration)
                        ),
                    })?,
            ),
        };
        let key = CreateKey {
            name: self.name.clone(),
            grants: self.grants.clone(),
            expires_at,
        };
        keys::validate(&key, now).map_err(|InvalidKey { field, message }| {
            let (flag, message) = match field.as_str() {
                "name" => ("--name", message),
                "expires_at" => (
                    "--expires-in",
                    "must be longer than nothing; give a duration such as 30d or 12h, or leave \
                     the flag out for a key that does not expire"
                        .to_owned(),
                ),
                // `grants`, `grants[i].streams`: the i-th --grant.
                _ => ("--grant", message),
            };
            ConfigError::Invalid { flag, message }
        })?;
        Ok(key)
    }
}

/// `strata keys revoke`.
#[derive(Debug, Clone, Args)]
pub struct RevokeKeyArgs {
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The key's name.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use super::*;
    use clap::Parser;
    use strata_core::auth::Scope;

    fn create(args: &[&str]) -> Result<CreateKeyArgs, clap::Error> {
        let mut all = vec![
            "strata",
            "keys",
            "create",
            "--database-url",
            "postgres://x/y",
        ];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            Command::Keys(KeysArgs {
                command: KeysCommand::Create(create),
            }) => Ok(create),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_reads_grants_and_a_duration() {
        let args = create(&[
            "--name",
            "ci",
            "--grant",
            "read:account-",
            "--grant",
            "write",
            "--expires-in",
            "30d",
        ])
        .unwrap();
        let now = Utc::now();
        let key = args.to_request(now).unwrap();
        assert_eq!(
            key.grants,
            vec![
                Grant::new(Scope::Read, "account-"),
                Grant::new(Scope::Write, "")
            ]
        );
        assert_eq!(key.expires_at, Some(now + TimeDelta::days(30)));
        let forever = create(&["--name", "ci", "--grant", "admin"]).unwrap();
        assert_eq!(forever.to_request(now).unwrap().expires_at, None);
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (&["--name", "ci", "--grant", "reed"][..], "--grant"),
            (&["--name", "ci"][..], "--grant"),
            (
                &["--name", "ci", "--grant", "read", "--expires-in", "3x"][..],
                "--expires-in",
            ),
        ] {
            let err = create(args).unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
        let now = Utc::now();
        for (args, flag) in [
            (&["--name", "a b", "--grant", "read"][..], "--name"),
            (&["--name", "ci", "--grant", "read:a b"][..], "--grant"),
            (
                &["--name", "ci", "--grant", "read", "--expires-in", "0s"][..],
                "--expires-in",
            ),
            (
                &[
                    "--name",
                    "ci",
                    "--grant",
                    "read",
                    "--expires-in",
                    "999999999y",
                ][..],
                "--expires-in",
            ),
        ] {
            let err = create(args).unwrap().to_request(now).unwrap_err();
            assert!(err.to_string().starts_with(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn list_and_revoke_take_the_database_as_the_others() {
        let cli = Cli::try_parse_from(["strata", "keys", "revoke", "ci", "--database-url", "u"]);
        assert!(matches!(
            cli.unwrap().command,
            Command::Keys(KeysArgs { command: KeysCommand::Revoke(RevokeKeyArgs { name, database }) })
                if name == "ci" && database.database_url.as_deref() == Some("u")
        ));
        let cli = Cli::try_parse_from(["strata", "keys", "list"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Keys(KeysArgs {
                command: KeysCommand::List(_)
            })
        ));
    }
}
