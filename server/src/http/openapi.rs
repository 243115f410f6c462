//! What the OpenAPI document holds besides its operations: the API's
//! description and the wire types' schemas. The operations come from the
//! route table (`routes`), which adds each handler's `#[utoipa::path]` as it
//! routes it, so a served route and its documentation are one declaration.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Strata",
        description = "An event store and CQRS server on PostgreSQL. Errors are \
            `{\"error\": CODE, \"message\": TEXT, ...details}`. Choices where the contract is \
            silent: a batch over --max-batch-events is `413 payload_too_large`; a soft-deleted \
            stream accepts `no_stream` and its last version as expected versions, and reports \
            that version as `actual` in a conflict; unknown query parameters are `400`; a \
            non-JSON Content-Type is `415 unsupported_media_type`; JSON strings with \\u0000 are \
            `400` (PostgreSQL cannot store them).",
    ),
    components(schemas(
        strata_core::RecordedEvent,
        strata_core::NewEvent,
        strata_core::AppendRequest,
        strata_core::AppendSnapshot,
        strata_core::AppendResult,
        strata_core::AppendedEvent,
        strata_core::StreamPage,
        strata_core::AllPage,
        strata_core::StreamInfo,
        strata_core::StreamList,
        strata_core::PutSnapshot,
        strata_core::Snapshot,
        strata_core::ErrorBody,
        strata_core::subscription::SubscriptionSettings,
        strata_core::subscription::SubscriptionStatus,
        strata_core::subscription::AckRequest,
        strata_core::subscription::NackRequest,
        strata_core::subscription::NackAction,
        strata_core::subscription::PartitionBy,
        strata_core::subscription::ResetRequest,
        strata_core::subscription::ParkedEvent,
        strata_core::subscription::ParkedList,
        strata_core::subscription::ClusterView,
        strata_core::subscription::NodeInfo,
        strata_core::subscription::LeaseInfo,
        strata_core::subscription::ProjectionStatus,
        strata_core::auth::Scope,
        strata_core::auth::Grant,
        strata_core::auth::CreateKey,
        strata_core::auth::CreatedKey,
        strata_core::auth::KeyInfo,
        strata_core::auth::KeyList,
    ))
)]
struct ApiDoc;

/// The OpenAPI 3 document without paths: the route table adds them.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
