//! The group statement: one call of `strata_append` (in the migrations) for
//! the whole group, and its rows turned into one verdict per request (and,
//! when asked, into the events as stored, for the live feed).

use std::collections::HashSet;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::PgConnection;
use sqlx::types::Json;
use strata_core::{ExpectedVersion, WrongExpectedVersion};
use uuid::Uuid;

use super::idempotency;
use super::{AppendCommand, AppendError, AppendOutcome};
use crate::store::StoredEvent;

/// `{}`, the metadata of events that have none.
static EMPTY_OBJECT: std::sync::LazyLock<Box<RawValue>> =
    std::sync::LazyLock::new(|| RawValue::from_string("{}".to_owned()).expect("{} is JSON"));

/// The outcome of one request within a group.
pub(super) enum Verdict {
    /// Accepted: its events got consecutive versions and positions.
    Accepted {
        first_position: i64,
        first_version: i64,
    },
    /// Answered without writing (idempotent retry or a refusal).
    Done(Result<AppendOutcome, AppendError>),
    /// Depends on another request of this group: try again in the next one.
    Deferred,
}

/// What a committed group decided.
pub(super) struct GroupOutcome {
    pub(super) verdicts: Vec<Verdict>,
    /// The group's last position, when it stored anything.
    pub(super) last_position: Option<i64>,
    /// The events stored, in position order, when the statement was asked
    /// to return them (`feed`) and stored any.
    pub(super) stored: Option<Vec<StoredEvent>>,
    /// Some request repeated ids already stored (a retry or a duplicate).
    pub(super) repeats: bool,
}

/// The arguments of `strata_append`, one vector per SQL array.
#[derive(Default)]
struct Arguments<'a> {
    stream_names: Vec<&'a str>,
    r_stream: Vec<i32>,
    r_expected: Vec<i64>,
    r_events: Vec<i32>,
    e_request: Vec<i32>,
    e_index: Vec<i32>,
    e_id: Vec<Uuid>,
    e_type: Vec<&'a str>,
    e_data: Vec<Json<&'a RawValue>>,
    e_metadata: Vec<Json<&'a RawValue>>,
    e_correlation_id: Vec<Option<Uuid>>,
    e_causation_id: Vec<Option<Uuid>>,
}

/// An expected version as `strata_append` takes it (`r_expected`): a version
/// N >= 0, or a negative sentinel for the other checks. The sentinels are
/// written here and in the function (its header and its `CASE`) only.
fn expected_code(expected: ExpectedVersion) -> i64 {
    /// `"any"`.
    const ANY: i64 = -1;
    /// `"no_stream"`.
    const NO_STREAM: i64 = -2;
    /// `"exists"`.
    const EXISTS: i64 = -3;
    match expected {
        ExpectedVersion::Any => ANY,
        ExpectedVersion::NoStream => NO_STREAM,
        ExpectedVersion::Exists => EXISTS,
        ExpectedVersion::Exact(n) => i64::try_from(n).unwrap_or(i64::MAX),
    }
}

/// What `strata_append` decided for one request (its `outcome` column; the
/// codes are documented in the function's header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[repr(i16)]
enum Outcome {
    /// Stored: the events got versions `version..` and positions `position..`.
    Appended = 0,
    /// Some of its ids are stored already: a retry or a duplicate, to be
    /// told apart by looking them up.
    IdsStored = 1,
    /// The expected version did not fit; `version` is the stream's.
    WrongExpectedVersion = 2,
    /// The stream is tombstoned.
    StreamDeleted = 3,
    /// An exact repeat of a stored append: its events are stored from
    /// `version` and `position` on, consecutively and in this order.
    Repeated = 4,
    /// Not a request: one event stored by this group (asked for by `feed`),
    /// after the request rows.
    Stored = 9,
}

/// One row of `strata_append`'s answer.
#[derive(sqlx::FromRow)]
struct Row {
    outcome: Outcome,
    version: Option<i64>,
    position: Option<i64>,
    created_at: Option<DateTime<Utc>>,
    data: Option<String>,
    metadata: Option<String>,
}

/// Runs `strata_append` for the group and turns its rows into verdicts.
/// `check_ids`: look the group's ids up before judging it; `feed`: return
/// the stored events too.
pub(super) async fn run(
    conn: &mut PgConnection,
    commands: &[&AppendCommand],
    check_ids: bool,
    feed: bool,
) -> Result<GroupOutcome, sqlx::Error> {
    let mut names: Vec<&str> = commands.iter().map(|c| c.stream.as_str()).collect();
    names.sort_unstable();
    names.dedup();

    // Requests reusing an id of an earlier request of this group wait for the
    // next group, where the earlier one is stored and this one is judged
    // against it.
    let mut group_ids: HashSet<Uuid> = HashSet::new();
    let mut sent: Vec<usize> = Vec::with_capacity(commands.len());
    let mut args = Arguments {
        stream_names: names.clone(),
        ..Arguments::default()
    };
    for (i, command) in commands.iter().enumerate() {
        if command.events.iter().any(|e| group_ids.contains(&e.id)) {
            continue;
        }
        group_ids.extend(command.events.iter().map(|e| e.id));
        sent.push(i);
        let request = sent.len() as i32;
        let stream = names.binary_search(&command.stream.as_str()).unwrap_or(0) as i32 + 1;
        args.r_stream.push(stream);
        args.r_expected.push(expected_code(command.expected));
        args.r_events.push(command.events.len() as i32);
        for (index, event) in command.events.iter().enumerate() {
            args.e_request.push(request);
            args.e_index.push(index as i32);
            args.e_id.push(event.id);
            args.e_type.push(&event.event_type);
            args.e_data.push(Json(&event.data));
            args.e_metadata
                .push(Json(event.metadata.as_deref().unwrap_or(&EMPTY_OBJECT)));
            args.e_correlation_id.push(event.correlation_id);
            args.e_causation_id.push(event.causation_id);
        }
    }

    let started = Instant::now();
    let mut rows: Vec<Row> = sqlx::query_as(
        "SELECT outcome, version, position, created_at, data, metadata \
         FROM strata_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(check_ids)
    .bind(feed)
    .bind(&args.stream_names)
    .bind(&args.r_stream)
    .bind(&args.r_expected)
    .bind(&args.r_events)
    .bind(&args.e_request)
    .bind(&args.e_index)
    .bind(&args.e_id)
    .bind(&args.e_type)
    .bind(&args.e_data)
    .bind(&args.e_metadata)
    .bind(&args.e_correlation_id)
    .bind(&args.e_causation_id)
    .fetch_all(&mut *conn)
    .await?;
    metrics::histogram!("strata_append_statement_seconds").record(started.elapsed().as_secs_f64());

    let mut verdicts: Vec<Verdict> = commands.iter().map(|_| Verdict::Deferred).collect();
    let mut base = None;
    let mut appended = 0;
    let mut stored_ids_needed: Vec<Uuid> = Vec::new();
    let mut ids_stored: Vec<usize> = Vec::new();
    let mut repeats = false;
    let request_count = sent.len().min(rows.len());
    let (request_rows, stored_rows) = rows.split_at_mut(request_count);
    for (row, &i) in request_rows.iter().zip(&sent) {
        let version = row.version;
        let command = commands[i];
        verdicts[i] = match row.outcome {
            Outcome::Appended => {
                let position = row.position.ok_or_else(|| {
                    sqlx::Error::Protocol("strata_append appended without a position".into())
                })?;
                base.get_or_insert(position - 1);
                appended += command.events.len();
                Verdict::Accepted {
                    first_position: position,
                    first_version: version.unwrap_or(1),
                }
            }
            Outcome::IdsStored => {
                repeats = true;
                stored_ids_needed.extend(command.events.iter().map(|e| e.id));
                ids_stored.push(i);
                Verdict::Deferred
            }
            Outcome::Repeated => {
                repeats = true;
                match (version, row.position) {
                    (Some(version), Some(position)) => Verdict::Done(Ok(idempotency::consecutive(
                        command, version, position, false,
                    ))),
                    _ => {
                        return Err(sqlx::Error::Protocol(
                            "strata_append answered a repeat without its position".into(),
                        ));
                    }
                }
            }
            Outcome::Stored => {
                return Err(sqlx::Error::Protocol(
                    "strata_append returned fewer request rows than requests".into(),
                ));
            }
            Outcome::WrongExpectedVersion => Verdict::Done(Err(AppendError::WrongExpectedVersion(
                WrongExpectedVersion {
                    expected: command.expected,
                    actual: version.map(|v| v as u64),
                },
            ))),
            Outcome::StreamDeleted => Verdict::Done(Err(AppendError::StreamDeleted)),
        };
    }
    if !ids_stored.is_empty() {
        let stored = idempotency::stored_events(&mut *conn, &stored_ids_needed).await?;
        for i in ids_stored {
            verdicts[i] = Verdict::Done(idempotency::idempotent_result(commands[i], &stored));
        }
    }
    let last_position = base.map(|b| b + appended as i64);
    if appended > 0 {
        metrics::counter!("strata_events_appended_total").increment(appended as u64);
    }
    let stored = match base {
        Some(base) if feed => Some(stored_events(
            commands,
            &verdicts,
            stored_rows,
            base,
            appended,
        )?),
        _ => None,
    };
    Ok(GroupOutcome {
        verdicts,
        last_position,
        stored,
        repeats,
    })
}

/// The events this group stored, in position order: what the request said
/// (stream, id, type, correlation) joined with what the statement returned
/// for each position (version, time, and the JSON as PostgreSQL prints it,
/// which is what a read returns).
fn stored_events(
    commands: &[&AppendCommand],
    verdicts: &[Verdict],
    rows: &mut [Row],
    base: i64,
    appended: usize,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mismatch = || sqlx::Error::Protocol("strata_append's stored rows do not match".into());
    if rows.len() != appended {
        return Err(mismatch());
    }
    let mut slots: Vec<Option<StoredEvent>> = (0..appended).map(|_| None).collect();
    for (command, verdict) in commands.iter().zip(verdicts) {
        let Verdict::Accepted { first_position, .. } = verdict else {
            continue;
        };
        for (i, event) in command.events.iter().enumerate() {
            let position = first_position + i as i64;
            let index = usize::try_from(position - base - 1).map_err(|_| mismatch())?;
            let row = rows.get_mut(index).ok_or_else(mismatch)?;
            if row.outcome != Outcome::Stored || row.position != Some(position) {
                return Err(mismatch());
            }
            let slot = slots.get_mut(index).ok_or_else(mismatch)?;
            *slot = Some(StoredEvent {
                position,
                stream: command.stream.clone(),
                version: row.version.ok_or_else(mismatch)?,
                id: event.id,
                event_type: event.event_type.clone(),
                data: row.data.take().ok_or_else(mismatch)?,
                metadata: row.metadata.take().ok_or_else(mismatch)?,
                correlation_id: event.correlation_id,
                causation_id: event.causation_id,
                created_at: row.created_at.ok_or_else(mismatch)?,
            });
        }
    }
    slots.into_iter().map(|s| s.ok_or_else(mismatch)).collect()
}
