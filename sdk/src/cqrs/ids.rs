//! Aggregate ids to stream names and back.
//!
//! A stream is `{TYPE}-{encoded id}`. The encoding is percent-encoding with
//! `@` in place of `%`, since stream names allow `A-Z a-z 0-9 _ - . : @`
//! only: every byte of the id's UTF-8 outside that set becomes `@XX`
//! (uppercase hex), and an `@` that is followed by two uppercase hex digits
//! becomes `@40`. Every other character stays as it is, so an id that was a
//! valid stream name tail before (`42`, a UUID, `joe@example.com`) keeps its
//! stream; only an old id with `@` followed by two of `0-9 A-F` (`x@1F`)
//! would now be read as an escape. Decoding turns each `@XX` back into its
//! byte and leaves any other `@` alone, so the encoding is reversible.
//!
//! Stream names are at most 200 characters: the encoded id gets
//! `200 - TYPE.len() - 1` of them (an id of plain characters can be that
//! long, one of `ü`s a sixth of it). postgres-es takes longer ids; here
//! they are refused with a clear error rather than shortened, which could
//! not be undone.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use strata_core::names::{NameKind, validate_stream_name};

/// Bytes encoded: everything but the characters of a stream name.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'-')
    .remove(b'.')
    .remove(b':')
    .remove(b'@');

/// Why an aggregate id has no stream.
#[derive(Debug, thiserror::Error)]
#[error(
    "aggregate id {id:?} of {aggregate_type} does not fit a stream name: encoded it is \
     {len} characters, and with \"{aggregate_type}-\" in front the limit is {max}; use a \
     shorter id (the limit is {limit} characters in all)",
    limit = NameKind::Stream.max_len()
)]
pub struct IdTooLong {
    /// The aggregate type.
    pub aggregate_type: String,
    /// The id (its first 100 characters).
    pub id: String,
    /// Its encoded length.
    pub len: usize,
    /// The longest encoded id for this type.
    pub max: usize,
}

/// `id` as the tail of a stream name.
pub fn encode(id: &str) -> String {
    let escaped = utf8_percent_encode(id, ESCAPED).to_string();
    let bytes = escaped.as_bytes();
    let mut out = String::with_capacity(escaped.len());
    for (i, c) in escaped.char_indices() {
        match c {
            '@' if is_escape(&bytes[i + 1..]) => out.push_str("@40"),
            '%' => out.push('@'),
            c => out.push(c),
        }
    }
    out
}

/// The id whose [`encode`] is `tail`; `None` when `tail` is not one.
pub fn decode(tail: &str) -> Option<String> {
    let bytes = tail.as_bytes();
    let mut escaped = String::with_capacity(tail.len());
    for (i, c) in tail.char_indices() {
        match c {
            '@' if is_escape(&bytes[i + 1..]) => escaped.push('%'),
            '@' => escaped.push_str("%40"),
            c => escaped.push(c),
        }
    }
    percent_decode_str(&escaped)
        .decode_utf8()
        .ok()
        .map(|id| id.into_owned())
}

fn is_escape(rest: &[u8]) -> bool {
    let hex = |b: &u8| b.is_ascii_digit() || (b'A'..=b'F').contains(b);
    rest.len() >= 2 && hex(&rest[0]) && hex(&rest[1])
}

/// The stream of aggregate `id` of type `aggregate_type`.
///
/// # Errors
///
/// [`IdTooLong`] when the stream name would be over the limit.
pub fn stream(aggregate_type: &str, id: &str) -> Result<String, IdTooLong> {
    let name = format!("{aggregate_type}-{}", encode(id));
    if validate_stream_name(&name).is_err() {
        let max = NameKind::Stream
            .max_len()
            .saturating_sub(aggregate_type.len() + 1);
        return Err(IdTooLong {
            aggregate_type: aggregate_type.to_owned(),
            id: id.chars().take(100).collect(),
            len: name.len() - aggregate_type.len() - 1,
            max,
        });
    }
    Ok(name)
}

/// The aggregate id of `stream`, a stream of `aggregate_type`.
pub fn aggregate_id(aggregate_type: &str, stream: &str) -> Option<String> {
    let tail = stream.strip_prefix(aggregate_type)?.strip_prefix('-')?;
    decode(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_keep_their_streams() {
        for id in [
            "42",
            "0b6f1c1e-6b7e-4c1e-9f0a-2b1c3d4e5f60",
            "joe@example.com",
            "a:b.c_d",
            "x@1",
        ] {
            assert_eq!(encode(id), id);
            assert_eq!(stream("account", id).unwrap(), format!("account-{id}"));
        }
    }

    #[test]
    fn any_id_round_trips() {
        for id in [
            "",
            "with space",
            "müller",
            "a/b",
            "100%",
            "x@1F",
            "@@41",
            "a@",
            "@",
            "日本",
            "a\nb",
            "%40",
            "@40",
            "tab\there",
            "$x",
            "-lead",
        ] {
            let tail = encode(id);
            let name = format!("account-{tail}");
            assert!(validate_stream_name(&name).is_ok(), "{name}");
            assert_eq!(decode(&tail).as_deref(), Some(id), "{id:?} → {tail}");
            assert_eq!(aggregate_id("account", &name).as_deref(), Some(id));
        }
        assert_eq!(encode("with space"), "with@20space");
        assert_eq!(encode("müller"), "m@C3@BCller");
    }

    #[test]
    fn long_ids_are_refused_clearly() {
        let fits = "x".repeat(200 - "account-".len());
        assert!(stream("account", &fits).is_ok());
        let error = stream("account", &format!("{fits}x")).unwrap_err();
        assert_eq!(error.max, 192);
        assert!(error.to_string().contains("shorter id"), "{error}");
    }
}
