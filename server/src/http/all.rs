//! `GET /all`: the global log, with filters.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use strata_core::auth::Scope;
use strata_core::names::{validate_category, validate_event_type};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::Params;
use super::json::{JsonBytes, all_page};
use crate::auth::{Principal, Target};
use crate::store::{self, AllFilter};

/// Splits a comma-separated list and checks each item.
///
/// # Errors
///
/// `400` naming the parameter when an item is empty or breaks its rule.
pub fn list_param<E: std::fmt::Display>(
    params: &mut Params,
    name: &str,
    check: impl Fn(&str) -> Result<(), E>,
) -> Result<Vec<String>, ApiError> {
    let Some(text) = params.text(name) else {
        return Ok(Vec::new());
    };
    let items: Vec<String> = text.split(',').map(str::to_owned).collect();
    if items.len() > 100 {
        return Err(ApiError::invalid(
            name,
            format!("{name} takes at most 100 values"),
        ));
    }
    for item in &items {
        check(item).map_err(|e| ApiError::invalid(name, e.to_string()))?;
    }
    Ok(items)
}

/// Takes the `category`, `type` and `correlation_id` filters of a read by
/// `principal`.
///
/// A category holds the stream named like it (`account`) as well as its
/// `account-…` streams; a grant `account-` covers the category (API.md) but
/// not that one stream, so it is left out of the read for such a reader.
///
/// # Errors
///
/// `400` naming the parameter at fault.
pub fn filter_params(
    params: &mut Params,
    with_correlation: bool,
    principal: &Principal,
) -> Result<AllFilter, ApiError> {
    let categories = list_param(params, "category", validate_category)?;
    let types = list_param(params, "type", validate_event_type)?;
    let correlation_id = if with_correlation {
        params
            .text("correlation_id")
            .map(|text| {
                Uuid::parse_str(&text).map_err(|_| {
                    ApiError::invalid("correlation_id", format!("{text:?} is not a UUID"))
                })
            })
            .transpose()?
    } else {
        None
    };
    let hidden_streams = categories
        .iter()
        .filter(|c| !principal.may(Scope::Read, Target::Stream(c)))
        .cloned()
        .collect();
    Ok(AllFilter {
        categories,
        types,
        correlation_id,
        stream: None,
        hidden_streams,
        reserved: false,
    })
}

/// Read the `$all` log.
#[utoipa::path(
    get, path = "/all", tag = "all",
    params(
        ("from" = Option<u64>, Query, description = "Position to start at, inclusive"),
        ("direction" = Option<String>, Query, description = "forward (default) or backward"),
        ("limit" = Option<u32>, Query, description = "1–1000, default 100"),
        ("category" = Option<String>, Query, description = "Comma-separated categories"),
        ("type" = Option<String>, Query, description = "Comma-separated event types"),
        ("correlation_id" = Option<String>, Query, description = "One correlation id"),
    ),
    responses(
        (status = 200, description = "A page of events; forward reads always give `next`", body = strata_core::AllPage),
        (status = 400, description = "Invalid parameter", body = strata_core::ErrorBody),
    )
)]
pub async fn read_all(
    State(state): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    mut params: Params,
) -> Result<JsonBytes, ApiError> {
    let from = params.integer("from", 0, i64::MAX as u64)?;
    let direction = params.direction()?;
    let limit = params.limit()?;
    let filter = filter_params(&mut params, true, &principal)?;
    params.finish("from, direction, limit, category, type, correlation_id")?;
    let page = store::read_all(
        &state.pool,
        from.map(|f| f as i64),
        direction,
        limit,
        &filter,
    )
    .await?;
    metrics::counter!("strata_events_read_total", "source" => "all")
        .increment(page.events.len() as u64);
    Ok(all_page(&page))
}
