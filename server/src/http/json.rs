//! Pages of events written straight into JSON bytes: the stored payloads go
//! out as PostgreSQL printed them, without being parsed again.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::store::{AllRead, StreamRead, write_json_array};

/// A response whose body is JSON already serialised.
pub struct JsonBytes(pub Vec<u8>);

impl IntoResponse for JsonBytes {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

fn write_opt(out: &mut Vec<u8>, value: Option<i64>) {
    match value {
        Some(v) => out.extend_from_slice(v.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

/// `{"stream", "version", "events", "next"}`.
pub fn stream_page(stream: &str, page: &StreamRead) -> JsonBytes {
    let mut out = Vec::with_capacity(256 + page.events.len() * 256);
    out.extend_from_slice(b"{\"stream\":");
    serde_json::to_writer(&mut out, stream).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(page.version.to_string().as_bytes());
    out.extend_from_slice(b",\"events\":");
    write_json_array(&mut out, &page.events);
    out.extend_from_slice(b",\"next\":");
    write_opt(&mut out, page.next);
    out.push(b'}');
    JsonBytes(out)
}

/// `{"events", "next"}`.
pub fn all_page(page: &AllRead) -> JsonBytes {
    let mut out = Vec::with_capacity(64 + page.events.len() * 256);
    out.extend_from_slice(b"{\"events\":");
    write_json_array(&mut out, &page.events);
    out.extend_from_slice(b",\"next\":");
    write_opt(&mut out, page.next);
    out.push(b'}');
    JsonBytes(out)
}
