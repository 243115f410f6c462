//! Extractors whose rejections are the contract's JSON errors (axum's own
//! answer in plain text), naming the field or parameter at fault.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{header, request::Parts};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;

/// A JSON body, parsed with the path of the offending field in its errors.
/// A missing `Content-Type` is accepted; a non-JSON one is `415`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(content_type) = req.headers().get(header::CONTENT_TYPE) {
            let text = content_type
                .to_str()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let essence = text.split(';').next().unwrap_or_default().trim();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "the body must be JSON (Content-Type: application/json), not {essence:?}"
                )));
            }
        }
        let bytes = read_body(req, state.limits.max_body_bytes).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The body, already read by `http::intake` (for `POST`, `PUT` and
/// `PATCH`) under the size, time and memory limits; any other method's
/// body is read here under the size limit.
async fn read_body(req: Request, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge {
            message: format!(
                "the request body is over the size limit of {limit} bytes (--max-body-bytes)"
            ),
            field: None,
        })
}

/// Parses `bytes` as `T`, or a `400` naming the field and the place.
///
/// # Errors
///
/// [`ApiError::InvalidRequest`] when the JSON is malformed, does not fit `T`,
/// or is followed by anything but whitespace.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::InvalidRequest {
            message: "the request needs a JSON body".into(),
            field: None,
        });
    }
    if let Some(field) = too_deep(bytes, MAX_JSON_DEPTH) {
        return Err(ApiError::InvalidRequest {
            message: format!(
                "{}nested deeper than {MAX_JSON_DEPTH} levels of objects and arrays \
                 (counted from the top of the body); flatten the document",
                if field.is_empty() {
                    String::new()
                } else {
                    format!("{field}: ")
                }
            ),
            field: (!field.is_empty()).then_some(field),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let field = (path != ".").then_some(path);
        ApiError::InvalidRequest {
            message: match &field {
                Some(field) => format!("{field}: {inner}"),
                None => format!("malformed JSON body: {inner}"),
            },
            field,
        }
    })?;
    // One document per body: trailing garbage or a second document would
    // otherwise be ignored, and a client with a framing bug would see its
    // first part stored as if all was well.
    deserializer
        .end()
        .map_err(|error| ApiError::InvalidRequest {
            message: format!(
                "malformed JSON body: {error}; the body must be one JSON document \
                 (whitespace may follow it, nothing else)"
            ),
            field: None,
        })?;
    Ok(value)
}

/// How deep a JSON body may nest (objects and arrays), counted from the
/// body's top. Event data and snapshots are kept as raw JSON until
/// PostgreSQL parses them, and `jsonb` gives up (`54001 stack depth limit
/// exceeded`) somewhere past 10,000 levels: the limit is checked on the
/// bytes, before any parsing, far below that.
pub const MAX_JSON_DEPTH: usize = 512;

/// Levels of the body named in the error (`events[3].data`): enough to find
/// the event, without copying a path thousands of levels long.
const NAMED_LEVELS: usize = 3;

/// Where `bytes` first nests deeper than `limit`: the path of the member
/// that does (`events[3].data`, `""` when it is the body itself), or `None`.
///
/// A scan of the bytes, not a parse: it tells strings from structure and
/// counts brackets, and leaves malformed JSON for the parser to name.
fn too_deep(bytes: &[u8], limit: usize) -> Option<String> {
    /// One open object or array, with its current member (kept for the
    /// first [`NAMED_LEVELS`] only).
    struct Level {
        object: bool,
        index: usize,
        key: Vec<u8>,
    }
    let mut levels: Vec<Level> = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // In an object, the next string is a key (after `{` or `,`).
    let mut expect_key = false;
    let mut key: Option<Vec<u8>> = None;
    for &byte in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
                if let (Some(done), Some(level)) = (key.take(), levels.last_mut()) {
                    level.key = done;
                }
                continue;
            }
            if let Some(key) = key.as_mut() {
                key.push(byte);
            }
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                if expect_key && depth <= NAMED_LEVELS {
                    key = Some(Vec::new());
                }
                expect_key = false;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return Some(path(&levels));
                }
                if depth <= NAMED_LEVELS {
                    levels.push(Level {
                        object: byte == b'{',
                        index: 0,
                        key: Vec::new(),
                    });
                }
                expect_key = byte == b'{';
            }
            b'}' | b']' => {
                if depth <= NAMED_LEVELS {
                    levels.pop();
                }
                depth = depth.saturating_sub(1);
                expect_key = false;
            }
            b',' => {
                if depth <= NAMED_LEVELS
                    && let Some(level) = levels.last_mut()
                {
                    level.index += 1;
                    expect_key = level.object;
                } else {
                    // Deeper than the named levels the key is not kept,
                    // but a string after a comma may still be one.
                    expect_key = false;
                }
            }
            _ => {}
        }
    }
    return None;

    fn path(levels: &[Level]) -> String {
        let mut path = String::new();
        for level in levels {
            if level.object {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&String::from_utf8_lossy(&level.key));
            } else {
                path.push_str(&format!("[{}]", level.index));
            }
        }
        path
    }
}

/// The single path parameter of a route (a stream or resource name), as text.
pub struct PathName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(name)| PathName(name))
            .map_err(|rejection: PathRejection| {
                ApiError::invalid(
                    "path",
                    format!("bad path parameter: {}", rejection.body_text()),
                )
            })
    }
}

/// Query parameters, taken one by one with typed checks; `finish` rejects any
/// left over, so that a typo (`?form=3`) is an error instead of being ignored.
pub struct Params(BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut map = BTreeMap::new();
        let query = parts.uri.query().unwrap_or_default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if map.insert(key.to_string(), value.to_string()).is_some() {
                return Err(ApiError::invalid(
                    key.to_string(),
                    format!("query parameter {key:?} is given more than once"),
                ));
            }
        }
        Ok(Params(map))
    }
}

impl Params {
    /// Takes a raw text parameter.
    pub fn text(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    /// Takes an integer parameter in `min..=max`.
    ///
    /// # Errors
    ///
    /// `400` naming the parameter when it is not such an integer.
    pub fn integer(&mut self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        self.0
            .remove(name)
            .map(|text| {
                text.parse::<u64>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            name,
                            format!("{name} must be an integer from {min} to {max}, not {text:?}"),
                        )
                    })
            })
            .transpose()
    }

    /// Takes a boolean parameter (`true` / `false`).
    ///
    /// # Errors
    ///
    /// `400` naming the parameter when it is something else.
    pub fn boolean(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        self.0
            .remove(name)
            .map(|text| match text.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(ApiError::invalid(
                    name,
                    format!("{name} must be true or false, not {text:?}"),
                )),
            })
            .transpose()
    }

    /// Takes the paging limit: 1–1000, 100 by default.
    ///
    /// # Errors
    ///
    /// `400` when out of range.
    pub fn limit(&mut self) -> Result<i64, ApiError> {
        Ok(self.integer("limit", 1, 1000)?.unwrap_or(100) as i64)
    }

    /// Takes `direction`: `forward` (default) or `backward`.
    ///
    /// # Errors
    ///
    /// `400` for anything else.
    pub fn direction(&mut self) -> Result<strata_core::Direction, ApiError> {
        match self.0.remove("direction").as_deref() {
            None | Some("forward") => Ok(strata_core::Direction::Forward),
            Some("backward") => Ok(strata_core::Direction::Backward),
            Some(other) => Err(ApiError::invalid(
                "direction",
                format!("direction must be forward or backward, not {other:?}"),
            )),
        }
    }

    /// Rejects parameters nobody took.
    ///
    /// # Errors
    ///
    /// `400` naming the first unknown parameter.
    pub fn finish(self, known: &str) -> Result<(), ApiError> {
        match self.0.into_keys().next() {
            None => Ok(()),
            Some(key) => Err(ApiError::invalid(
                key.clone(),
                format!("unknown query parameter {key:?}; this endpoint takes {known}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_JSON_DEPTH, too_deep};

    fn nested(open: &str, close: &str, n: usize) -> String {
        format!("{}1{}", open.repeat(n), close.repeat(n))
    }

    #[test]
    fn a_body_within_the_limit_passes() {
        let body = format!(
            r#"{{"events":[{{"type":"t","data":{}}}]}}"#,
            nested("[", "]", MAX_JSON_DEPTH - 3)
        );
        assert_eq!(too_deep(body.as_bytes(), MAX_JSON_DEPTH), None);
    }

    #[test]
    fn a_body_past_the_limit_names_the_member() {
        let body = format!(
            r#"{{"events":[{{"type":"t","data":{{}}}},{{"type":"u, [","data":{}}}]}}"#,
            nested(r#"{"a":"#, "}", MAX_JSON_DEPTH)
        );
        assert_eq!(
            too_deep(body.as_bytes(), MAX_JSON_DEPTH).as_deref(),
            Some("events[1].data")
        );
    }

    #[test]
    fn brackets_and_quotes_inside_strings_do_not_count() {
        let body = format!(r#"{{"data":"{}\"{}"}}"#, "[".repeat(1000), "{".repeat(1000));
        assert_eq!(too_deep(body.as_bytes(), MAX_JSON_DEPTH), None);
    }

    #[test]
    fn a_deep_top_level_array_is_named_by_its_indices() {
        let body = nested("[", "]", MAX_JSON_DEPTH + 1);
        assert_eq!(
            too_deep(body.as_bytes(), MAX_JSON_DEPTH).as_deref(),
            Some("[0][0][0]")
        );
    }
}
