//! `strata keys create | list | revoke`, on the database directly.
//!
//! Messages and summaries go to stdout before anything a script reads:
//! `create` ends with the token alone on the last line
//! (`strata keys create … | tail -1`).

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::PgPool;
use strata_core::auth::{Grant, KeyInfo};
use strata_pg::audit::Actor;

use super::migrated_pool;
use crate::auth::keys::KeyStore;
use crate::config::{CreateKeyArgs, DatabaseArgs, KeysArgs, KeysCommand, RevokeKeyArgs};

/// Runs `strata keys …`.
pub(super) async fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Create(args) => create(args).await,
        KeysCommand::List(database) => list(database).await,
        KeysCommand::Revoke(args) => revoke(args).await,
    }
}

async fn create(args: CreateKeyArgs) -> anyhow::Result<()> {
    // The input first: a typo is reported without reaching for the database.
    let key = args.to_request(Utc::now())?;
    let pool = open(&args.database).await?;
    let created = KeyStore::new(pool.clone())
        .create(&key, &Actor::command_line("strata keys create"))
        .await;
    pool.close().await;
    let created = created?;
    let expiry = match created.expires_at {
        Some(at) => format!("it expires at {}", time(at)),
        None => "it does not expire".to_owned(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Created key {:?} with {}; {expiry}.",
        created.name,
        grants(&created.grants)
    )?;
    writeln!(
        out,
        "Keep the token below in a secret store: it is shown only this once."
    )?;
    writeln!(out, "{}", created.token)?;
    out.flush()?;
    Ok(())
}

async fn list(database: DatabaseArgs) -> anyhow::Result<()> {
    let pool = open(&database).await?;
    let keys = KeyStore::new(pool.clone()).list().await;
    pool.close().await;
    let keys = keys?;
    if keys.is_empty() {
        eprintln!("There are no keys yet; `strata keys create` makes one.");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(table(&keys).as_bytes())?;
    out.flush()?;
    Ok(())
}

async fn revoke(args: RevokeKeyArgs) -> anyhow::Result<()> {
    let pool = open(&args.database).await?;
    let found = KeyStore::new(pool.clone())
        .revoke(&args.name, &Actor::command_line("strata keys revoke"))
        .await;
    pool.close().await;
    if !found? {
        anyhow::bail!(
            "there is no key named {:?}; `strata keys list` shows the keys there are",
            args.name
        );
    }
    writeln!(
        std::io::stdout().lock(),
        "Revoked key {:?}: every node refuses it within 2 seconds.",
        args.name
    )?;
    Ok(())
}

/// A pool on the database of `database`, migrated first. Each command
/// closes it before the process ends, so that its connections end cleanly.
async fn open(database: &DatabaseArgs) -> anyhow::Result<PgPool> {
    migrated_pool(&database.resolve()?).await
}

/// One line per key under a header, in aligned columns.
fn table(keys: &[KeyInfo]) -> String {
    let rows: Vec<[String; 5]> = keys
        .iter()
        .map(|key| {
            [
                key.name.clone(),
                grants(&key.grants),
                time(key.created_at),
                key.expires_at.map_or_else(|| "never".to_owned(), time),
                key.revoked_at.map_or_else(|| "-".to_owned(), time),
            ]
        })
        .collect();
    let header = ["NAME", "GRANTS", "CREATED", "EXPIRES", "REVOKED"].map(str::to_owned);
    let mut widths = [0; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `read:account-, write`.
fn grants(grants: &[Grant]) -> String {
    grants
        .iter()
        .map(Grant::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `2026-12-03T12:00:00Z`.
fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::auth::Scope;

    #[test]
    fn the_list_is_one_aligned_line_per_key() {
        let at = DateTime::parse_from_rfc3339("2026-12-03T12:00:00.5Z")
            .unwrap()
            .to_utc();
        let keys = [
            KeyInfo {
                name: "ci".into(),
                grants: vec![
                    Grant::new(Scope::Read, "account-"),
                    Grant::new(Scope::Write, ""),
                ],
                created_at: at,
                expires_at: None,
                revoked_at: None,
            },
            KeyInfo {
                name: "operator".into(),
                grants: vec![Grant::new(Scope::Admin, "")],
                created_at: at,
                expires_at: Some(at),
                revoked_at: Some(at),
            },
        ];
        assert_eq!(
            table(&keys),
            "NAME      GRANTS                CREATED               EXPIRES               REVOKED\n\
             ci        read:account-, write  2026-12-03T12:00:00Z  never                 -\n\
             operator  admin                 2026-12-03T12:00:00Z  2026-12-03T12:00:00Z  2026-12-03T12:00:00Z\n"
        );
    }
}
