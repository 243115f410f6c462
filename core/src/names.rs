//! The naming rules of the wire contract: streams, categories, event types and
//! resource (subscription / projection) names.
//!
//! Every rule is a whitelist of ASCII characters and a length range, so a valid
//! name is always safe to put in a URL path segment, a log line or a SQL
//! parameter without escaping.
//!
//! ```
//! use strata_core::names::{category_of, validate_stream_name};
//!
//! assert!(validate_stream_name("account-42").is_ok());
//! assert_eq!(category_of("account-42"), "account");
//! assert!(validate_stream_name("$all").is_err());
//! ```

use std::fmt;

/// What kind of name a [`NameError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A stream name (`account-42`).
    Stream,
    /// A category: the part of a stream name before its first `-`.
    Category,
    /// An event type (`Deposited`, `bank.v2/Deposited`).
    EventType,
    /// A persistent subscription or projection name.
    Resource,
}

impl NameKind {
    /// The longest name of this kind, in characters.
    pub const fn max_len(self) -> usize {
        match self {
            NameKind::Stream | NameKind::Category | NameKind::EventType => 200,
            NameKind::Resource => 100,
        }
    }

    /// The characters this kind of name may contain, for error messages.
    pub const fn allowed(self) -> &'static str {
        match self {
            NameKind::Stream => "A-Z a-z 0-9 _ - . : @",
            NameKind::Category => "A-Z a-z 0-9 _ . : @",
            NameKind::EventType => "A-Z a-z 0-9 _ - . : /",
            NameKind::Resource => "A-Z a-z 0-9 _ - .",
        }
    }

    fn allows(self, c: u8) -> bool {
        let common = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.');
        match self {
            NameKind::Stream => common || matches!(c, b'-' | b':' | b'@'),
            NameKind::Category => common || matches!(c, b':' | b'@'),
            NameKind::EventType => common || matches!(c, b'-' | b':' | b'/'),
            NameKind::Resource => common || c == b'-',
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Stream => "stream name",
            NameKind::Category => "category",
            NameKind::EventType => "event type",
            NameKind::Resource => "name",
        })
    }
}

/// A name that breaks the rules of its kind. The message names the offending
/// character and where it is, so a client can fix its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// The kind of name.
        kind: NameKind,
    },
    /// The name is longer than its kind allows.
    #[error("{kind} is {len} characters long; the limit is {max}")]
    TooLong {
        /// The kind of name.
        kind: NameKind,
        /// Its length in characters.
        len: usize,
        /// The limit for this kind.
        max: usize,
    },
    /// The name starts with `$`, which is reserved for system streams.
    #[error("{kind} {name:?} starts with '$', which is reserved for system streams")]
    Reserved {
        /// The kind of name.
        kind: NameKind,
        /// The name as given.
        name: String,
    },
    /// The name contains a character outside its kind's whitelist.
    #[error(
        "{kind} {name:?} contains {character:?} at position {index}; allowed characters are {}",
        kind.allowed()
    )]
    BadCharacter {
        /// The kind of name.
        kind: NameKind,
        /// The name as given (truncated to 200 characters).
        name: String,
        /// The first offending character.
        character: char,
        /// Its 0-based character index.
        index: usize,
    },
}

/// Checks `name` against the rules of `kind`.
///
/// # Errors
///
/// [`NameError`] when the name is empty, too long, reserved or contains a
/// character its kind does not allow.
pub fn validate(kind: NameKind, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    let len = name.chars().count();
    if let Some((index, character)) = name
        .chars()
        .enumerate()
        .find(|&(_, c)| !c.is_ascii() || !kind.allows(c as u8))
    {
        if index == 0 && character == '$' && kind == NameKind::Stream {
            return Err(NameError::Reserved {
                kind,
                name: shorten(name),
            });
        }
        return Err(NameError::BadCharacter {
            kind,
            name: shorten(name),
            character,
            index,
        });
    }
    if len > kind.max_len() {
        return Err(NameError::TooLong {
            kind,
            len,
            max: kind.max_len(),
        });
    }
    Ok(())
}

fn shorten(name: &str) -> String {
    name.chars().take(200).collect()
}

/// Checks a stream name: 1–200 characters of `A-Z a-z 0-9 _ - . : @`.
///
/// # Errors
///
/// [`NameError`] describing the first rule broken.
pub fn validate_stream_name(name: &str) -> Result<(), NameError> {
    validate(NameKind::Stream, name)
}

/// Checks an event type: 1–200 characters of `A-Z a-z 0-9 _ - . : /`.
///
/// # Errors
///
/// [`NameError`] describing the first rule broken.
pub fn validate_event_type(name: &str) -> Result<(), NameError> {
    validate(NameKind::EventType, name)
}

/// Checks a category used as a filter: a stream name without `-`.
///
/// # Errors
///
/// [`NameError`] describing the first rule broken.
pub fn validate_category(name: &str) -> Result<(), NameError> {
    validate(NameKind::Category, name)
}

/// Checks a subscription or projection name: 1–100 characters of `A-Z a-z 0-9 _ - .`.
///
/// # Errors
///
/// [`NameError`] describing the first rule broken.
pub fn validate_resource_name(name: &str) -> Result<(), NameError> {
    validate(NameKind::Resource, name)
}

/// The category of a stream: the part of its name before the first `-`, or the
/// whole name when it has none.
///
/// ```
/// # use strata_core::names::category_of;
/// assert_eq!(category_of("account-42-eu"), "account");
/// assert_eq!(category_of("settings"), "settings");
/// ```
pub fn category_of(stream: &str) -> &str {
    stream.split_once('-').map_or(stream, |(head, _)| head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_allowed_stream_character() {
        let all = "AZaz09_-.:@";
        assert_eq!(validate_stream_name(all), Ok(()));
        assert_eq!(validate_stream_name(&"a".repeat(200)), Ok(()));
    }

    #[test]
    fn rejects_empty_long_reserved_and_foreign_names() {
        assert!(matches!(
            validate_stream_name(""),
            Err(NameError::Empty { .. })
        ));
        assert!(matches!(
            validate_stream_name(&"a".repeat(201)),
            Err(NameError::TooLong { len: 201, .. })
        ));
        assert!(matches!(
            validate_stream_name("$all"),
            Err(NameError::Reserved { .. })
        ));
        let err = validate_stream_name("acc/1").unwrap_err();
        assert!(matches!(
            err,
            NameError::BadCharacter {
                character: '/',
                index: 3,
                ..
            }
        ));
        assert!(err.to_string().contains("position 3"), "{err}");
        assert!(validate_stream_name("ünï").is_err());
        assert!(validate_stream_name("a b").is_err());
    }

    #[test]
    fn event_types_allow_slash_but_not_at() {
        assert_eq!(validate_event_type("bank.v2/Deposited:x-1"), Ok(()));
        assert!(validate_event_type("a@b").is_err());
    }

    #[test]
    fn resource_names_are_shorter_and_stricter() {
        assert_eq!(validate_resource_name("orders.v1-main_2"), Ok(()));
        assert!(validate_resource_name("a:b").is_err());
        assert!(validate_resource_name(&"a".repeat(101)).is_err());
    }

    #[test]
    fn category_is_the_part_before_the_first_dash() {
        assert_eq!(category_of("account-42"), "account");
        assert_eq!(category_of("account"), "account");
        assert_eq!(category_of("-x"), "");
        assert!(validate_category("account").is_ok());
        assert!(validate_category("account-1").is_err());
    }
}
