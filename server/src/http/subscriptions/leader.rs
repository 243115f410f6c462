//! Where a call only the leader serves goes: this node's dispatcher of the
//! subscription, or the answer to give instead (`404`, a `307` to the
//! leader, a `503` while no node can serve it).

use axum::extract::OriginalUri;
use tokio::sync::{mpsc, oneshot};

use super::{not_found, subscription_name};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::Params;
use crate::store::subscriptions::{self as db, resource};
use crate::subscriptions::{Command, Refused};

/// The local dispatcher of `name`, or the answer to give instead: `404`,
/// a `307` to the leader, or a `503` while no node can serve it.
async fn leader(
    state: &AppState,
    name: &str,
    uri: &OriginalUri,
) -> Result<mpsc::Sender<Command>, ApiError> {
    if let Some(commands) = state.subscriptions.local(name) {
        return Ok(commands);
    }
    if db::subscription_status(&state.pool, Some(name))
        .await?
        .is_empty()
    {
        return Err(not_found(name));
    }
    let holder = state
        .leases
        .holder(&resource(name))
        .await
        .map_err(crate::store::StoreError::from)?;
    let Some(strata_pg::lease::Holder { owner, .. }) = holder else {
        return Err(ApiError::Unavailable(format!(
            "no node leads subscription {name:?} right now (failover in progress); retry shortly"
        )));
    };
    if owner == state.node_id {
        return Err(ApiError::Unavailable(format!(
            "this node is starting to lead subscription {name:?}; retry shortly"
        )));
    }
    let Some(url) = db::node_url(&state.pool, &owner).await? else {
        return Err(ApiError::Unavailable(format!(
            "the leader of {name:?} is not reachable; retry shortly"
        )));
    };
    let location = format!("{url}{}", uri.0.path_and_query().map_or("", |p| p.as_str()));
    metrics::counter!("strata_subscription_redirects_total").increment(1);
    Err(ApiError::NotLeader {
        leader: owner,
        location,
    })
}

/// The answer when the dispatcher refuses or is gone.
pub(super) fn refused(refused: Refused, name: &str) -> ApiError {
    match refused {
        Refused::NotLeader => ApiError::Unavailable(format!(
            "this node stopped leading subscription {name:?}; retry, and you will be sent to the new leader"
        )),
        Refused::Unavailable => {
            ApiError::Unavailable("the database cannot be reached right now; retry shortly".into())
        }
    }
}

/// The common start of the calls only the leader serves: the name checked,
/// no query parameters, the call's own input (`input`, reported after the
/// name and the parameters), then the local dispatcher — or the answer to
/// give instead (a 4xx, a `307` to the leader, a `503`).
pub(super) async fn at_leader<T>(
    state: &AppState,
    name: String,
    params: Params,
    uri: &OriginalUri,
    input: Result<T, ApiError>,
) -> Result<(String, T, mpsc::Sender<Command>), ApiError> {
    let name = subscription_name(name)?;
    params.finish("no parameters")?;
    let input = input?;
    let commands = leader(state, &name, uri).await?;
    Ok((name, input, commands))
}

/// Sends `command` to the dispatcher and waits for its answer.
pub(super) async fn ask<T>(
    commands: mpsc::Sender<Command>,
    name: &str,
    command: impl FnOnce(oneshot::Sender<Result<T, Refused>>) -> Command,
) -> Result<T, ApiError> {
    let (reply, answer) = oneshot::channel();
    if commands.send(command(reply)).await.is_err() {
        return Err(refused(Refused::NotLeader, name));
    }
    match answer.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(r)) => Err(refused(r, name)),
        Err(_) => Err(refused(Refused::NotLeader, name)),
    }
}
