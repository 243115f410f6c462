//! A token as Strata reads it before and after `jsonwebtoken` has checked
//! it: its header, unverified, to choose the key; and each refusal in
//! words for the person holding the token.

use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::Algorithm;
use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};

/// Why a token is refused: the `401`'s message, for the person holding it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, or a header that is no JSON object.
    #[error("the bearer token is neither an API key (strata_…) nor a well-formed JWT: {0}")]
    Malformed(String),
    /// An algorithm Strata does not take (`HS256`, `none`, …).
    #[error("the token is signed with {0:?}; Strata accepts RS256, ES256 and EdDSA tokens only")]
    Algorithm(String),
    /// No key of the token's `kid`, even after fetching the set again.
    #[error(
        "the token's key id (kid) {0:?} is unknown: none of the node's keys (--jwt-jwks) has \
         it; if the issuer rotated its keys, the node sees the new set within 5 minutes"
    )]
    UnknownKey(String),
    /// No `kid`, and several keys to choose from.
    #[error(
        "the token names no key id (kid) and the node has {0} keys (--jwt-jwks): the issuer \
         must set `kid` in the token's header"
    )]
    NoKeyId(usize),
    /// The named key is for another algorithm.
    #[error("the token says {alg} but its key {kid:?} is for {key}: unknown key id or wrong key")]
    KeyMismatch {
        /// The token's key id.
        kid: String,
        /// The token's algorithm.
        alg: String,
        /// The key's algorithm.
        key: String,
    },
    /// The signature does not verify.
    #[error(
        "the token's signature does not verify against its key: it was altered, or signed by \
         another key"
    )]
    BadSignature,
    /// Past `exp` (and the leeway).
    #[error("the token expired {0} (its exp): get a fresh one from its issuer")]
    Expired(String),
    /// Before `nbf` (and the leeway).
    #[error("the token is not valid yet: not before {0} (its nbf)")]
    NotYetValid(String),
    /// Another `iss`.
    #[error("wrong issuer: the token's iss is {0}, which this node does not trust (--jwt-issuer)")]
    WrongIssuer(String),
    /// An `aud` without this node's audience.
    #[error(
        "wrong audience: the token's aud is {0}, which does not name this node (--jwt-audience)"
    )]
    WrongAudience(String),
    /// A required claim is absent (or not of its type).
    #[error("the token has no valid `{0}` claim; Strata needs exp, iss, aud and sub")]
    MissingClaim(String),
    /// A claim of the wrong type.
    #[error("the token's `{0}` claim is malformed")]
    BadClaim(String),
    /// The grants claim is not a list of grants.
    #[error(
        "the token's `{claim}` claim is malformed: {detail}; it must be a list of grants like \
         [{{\"scope\": \"read\", \"streams\": \"account-\"}}]"
    )]
    MalformedGrants {
        /// The claim's name.
        claim: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// The name of an algorithm as a JWT header writes it.
pub(super) fn name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        _ => "another algorithm",
    }
}

/// A part of the token (0: header, 1: claims) as a JSON object, unverified:
/// for choosing the key and for explaining refusals only.
fn peek(token: &str, part: usize) -> Result<Map<String, Value>, TokenError> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(TokenError::Malformed(format!(
            "a JWT is three base64url parts joined by dots, this has {}",
            parts.len()
        )));
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[part].trim_end_matches('='))
        .map_err(|e| TokenError::Malformed(format!("a part is not base64url: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TokenError::Malformed(format!("a part is not a JSON object: {e}")))
}

/// The header's `alg` and `kid`.
pub(super) fn peek_header(token: &str) -> Result<(String, Option<String>), TokenError> {
    let header = peek(token, 0)?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => return Err(TokenError::Malformed("its header has no `alg`".into())),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenError::Malformed("its `kid` is not a string".into())),
    };
    Ok((alg, kid))
}

/// A refusal of [`jsonwebtoken`] in words. The claims are read again for
/// the message only; the signature was verified before any claim check.
pub(super) fn explain(error: &jsonwebtoken::errors::Error, token: &str) -> TokenError {
    let claim = |name: &str| {
        peek(token, 1)
            .ok()
            .and_then(|claims| claims.get(name).cloned())
            .unwrap_or(Value::Null)
    };
    let time = |name: &str| {
        claim(name)
            .as_i64()
            .and_then(|at| DateTime::<Utc>::from_timestamp(at, 0))
            .map_or_else(
                || "at its time".to_owned(),
                |at| format!("at {}", at.to_rfc3339()),
            )
    };
    match error.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired(time("exp")),
        ErrorKind::ImmatureSignature => {
            TokenError::NotYetValid(time("nbf").trim_start_matches("at ").to_owned())
        }
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer(claim("iss").to_string()),
        ErrorKind::InvalidAudience => TokenError::WrongAudience(claim("aud").to_string()),
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::MissingRequiredClaim(name) => TokenError::MissingClaim(name.clone()),
        ErrorKind::InvalidClaimFormat(name) => TokenError::BadClaim(name.clone()),
        ErrorKind::InvalidAlgorithm => {
            TokenError::Algorithm("an algorithm its key does not fit".into())
        }
        _ => TokenError::Malformed(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn token(header: Value, claims: Value) -> String {
        let part =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", part(&header), part(&claims))
    }

    #[test]
    fn the_header_gives_the_algorithm_and_key_id() {
        let t = token(json!({"alg": "ES256", "kid": "k1"}), json!({}));
        assert_eq!(
            peek_header(&t).unwrap(),
            ("ES256".into(), Some("k1".into()))
        );
        let t = token(json!({"alg": "none"}), json!({}));
        assert_eq!(peek_header(&t).unwrap(), ("none".into(), None));
        for bad in [
            "abc",
            "a.b",
            "!!.b.c",
            &token(json!({"kid": "k"}), json!({})),
        ] {
            assert!(
                matches!(peek_header(bad), Err(TokenError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
