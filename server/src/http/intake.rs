//! Request bodies come in here, before any handler sees them: read whole
//! within `--body-timeout-ms`, at most `--max-body-bytes`, and counted
//! against the node's in-flight body budget (`--max-inflight-body-bytes`)
//! as their bytes *arrive*, not as the client declares them.
//!
//! Reserving the declared `Content-Length` up front let sixteen clients that
//! each announced 16 MiB and sent one byte hold the whole 256 MiB budget,
//! and every other append waited behind them for as long as they kept their
//! sockets open. Now such a client holds what it sent (a kibibyte), and is
//! answered `408` and disconnected when its body is late.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AppState;
use super::error::ApiError;

/// How much of an oversized body is read and thrown away before answering
/// `413`, as a multiple of the limit. Answering while the client is still
/// sending would make the kernel reset the connection, and the client would
/// see a dropped connection instead of the `413`; past this much, it does.
const DRAIN_FACTOR: usize = 4;

/// The budget's unit: permits are kibibytes.
const KIB: usize = 1024;

/// Reads the body of a `POST`, `PUT` or `PATCH` into memory under the
/// limits above, then hands the request on with the body buffered; the
/// budget is held until the answer is ready.
pub(super) async fn intake(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    ) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let waiting_for_budget = AtomicBool::new(false);
    let read = read_body(
        &parts,
        body,
        state.limits.max_body_bytes,
        &state.body_budget,
        &waiting_for_budget,
    );
    let (bytes, _held) = match tokio::time::timeout(state.timeouts.body, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(error)) => return error.into_response(),
        Err(_) if waiting_for_budget.load(Ordering::Acquire) => {
            return ApiError::Unavailable(format!(
                "this node holds --max-inflight-body-bytes ({} bytes) of request bodies \
                 already; retry shortly, or on another node",
                state.limits.max_inflight_body_bytes
            ))
            .into_response();
        }
        Err(_) => {
            return ApiError::RequestTimeout(format!(
                "the request body did not arrive within {} ms (--body-timeout-ms); \
                 the connection is closed",
                state.timeouts.body.as_millis()
            ))
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Reads the whole body, at most `limit` bytes of it (over that, `413`),
/// taking a kibibyte of `budget` for each that arrives.
async fn read_body(
    parts: &Parts,
    body: Body,
    limit: usize,
    budget: &Arc<Semaphore>,
    waiting_for_budget: &AtomicBool,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), ApiError> {
    let too_large = || ApiError::PayloadTooLarge {
        message: format!(
            "the request body is over the size limit of {limit} bytes (--max-body-bytes)"
        ),
        field: None,
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if declared.is_some_and(|n| n > limit) && expects_continue {
        // The client waits for our go-ahead: refuse before it sends anything.
        return Err(too_large());
    }
    let mut body = body.into_data_stream();
    // What is declared is not yet here: allocate for what arrives.
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(64 * KIB));
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut held_kib = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::InvalidRequest {
            message: format!("could not read the request body: {e}"),
            field: None,
        })?;
        if bytes.len() + chunk.len() > limit {
            let mut drained = bytes.len() + chunk.len();
            drop(bytes);
            drop(held);
            while drained <= limit.saturating_mul(DRAIN_FACTOR) {
                match body.next().await {
                    Some(Ok(chunk)) => drained += chunk.len(),
                    _ => break,
                }
            }
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
        let needed = bytes.len().div_ceil(KIB);
        if needed > held_kib {
            waiting_for_budget.store(true, Ordering::Release);
            let more = u32::try_from(needed - held_kib).expect("a body is below 4 TiB");
            let Ok(permit) = Arc::clone(budget).acquire_many_owned(more).await else {
                return Err(ApiError::Unavailable("the server is shutting down".into()));
            };
            waiting_for_budget.store(false, Ordering::Release);
            match held.as_mut() {
                Some(held) => held.merge(permit),
                None => held = Some(permit),
            }
            held_kib = needed;
        }
    }
    Ok((bytes, held))
}
