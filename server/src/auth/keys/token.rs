//! The text of an API key: `strata_<id>_<secret>`.
//!
//! - `id`: 16 lowercase hex characters (8 random bytes). Public: it only says
//!   which key is meant, like a user name.
//! - `secret`: 32 random bytes in URL-safe base64 without padding (43
//!   characters). Only its SHA-256 is stored.
//!
//! Every part has a fixed length, so a token is exactly 67 characters and
//! parsing never has to guess where the id ends (the secret's alphabet holds
//! `_` too).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every key token starts with.
pub const PREFIX: &str = "strata_";

/// Random bytes of an id (written as twice as many hex characters).
const ID_BYTES: usize = 8;
/// Hex characters of an id.
const ID_LEN: usize = 2 * ID_BYTES;
/// Random bytes of a secret.
const SECRET_BYTES: usize = 32;
/// Base64 characters of a secret: ⌈32 · 8 / 6⌉.
const SECRET_LEN: usize = 43;
/// Characters of a whole token.
const TOKEN_LEN: usize = PREFIX.len() + ID_LEN + 1 + SECRET_LEN;

/// The SHA-256 of a secret, as stored in `api_keys.secret_hash`.
pub(super) type SecretHash = [u8; 32];

/// A key's id and secret, parsed from a token or freshly drawn. `Debug`
/// shows the id only.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Token {
    id: String,
    secret: [u8; SECRET_BYTES],
}

impl Token {
    /// A new token from the operating system's random source.
    pub(super) fn generate() -> Result<Token, getrandom::Error> {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut id)?;
        getrandom::fill(&mut secret)?;
        let id = id.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Token { id, secret })
    }

    /// Reads `strata_<id>_<secret>`; `None` for anything else (a JWT, a
    /// truncated copy, a hand-made string).
    pub(super) fn parse(text: &str) -> Option<Token> {
        if text.len() != TOKEN_LEN {
            return None;
        }
        let rest = text.strip_prefix(PREFIX)?;
        let (id, secret) = (rest.get(..ID_LEN)?, rest.get(ID_LEN..)?);
        if !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let secret = secret.strip_prefix('_')?;
        // The engine refuses padding and non-zero trailing bits, so one
        // secret has exactly one spelling.
        let bytes = URL_SAFE_NO_PAD.decode(secret).ok()?;
        Some(Token {
            id: id.to_owned(),
            secret: bytes.try_into().ok()?,
        })
    }

    /// The key's public id.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The SHA-256 of the secret: what the database holds.
    pub(super) fn secret_hash(&self) -> SecretHash {
        Sha256::digest(self.secret).into()
    }

    /// Whether this token's secret is the one whose hash is `stored`, in
    /// time that does not depend on where the hashes differ.
    pub(super) fn matches(&self, stored: &SecretHash) -> bool {
        self.secret_hash()[..].ct_eq(&stored[..]).into()
    }

    /// The token's text, to show its holder once.
    pub(super) fn reveal(&self) -> String {
        format!(
            "{PREFIX}{}_{}",
            self.id,
            URL_SAFE_NO_PAD.encode(self.secret)
        )
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("secret", &"…")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        Token::generate().expect("randomness").reveal()
    }

    #[test]
    fn a_new_token_reads_back_as_itself() {
        let token = Token::generate().unwrap();
        let text = token.reveal();
        assert_eq!(text.len(), 67, "{text}");
        assert!(text.starts_with("strata_"), "{text}");
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "URL-safe: {text}"
        );
        let parsed = Token::parse(&text).expect("parses");
        assert_eq!(parsed, token);
        assert!(parsed.matches(&token.secret_hash()));
        assert_ne!(Token::generate().unwrap().id(), token.id());
    }

    #[test]
    fn a_different_secret_does_not_match() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert!(!a.matches(&b.secret_hash()));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = sample();
        let (id, secret) = (&good[7..23], &good[24..]);
        let cases = [
            String::new(),
            "strata_".to_owned(),
            // No prefix, or another one.
            good[7..].to_owned(),
            format!("strat_{}", &good[6..]),
            format!("STRATA_{}", &good[7..]),
            // Wrong lengths.
            good[..good.len() - 1].to_owned(),
            format!("{good}A"),
            format!("strata_{}_{secret}", &id[..15]),
            format!("strata_{id}0_{}", &secret[..42]),
            // Not lowercase hex.
            format!(
                "strata_{}_{secret}",
                id.to_uppercase().replace(char::is_numeric, "A")
            ),
            format!("strata_{}g_{secret}", &id[..15]),
            // No separator.
            format!("strata_{id}-{secret}"),
            // Not URL-safe base64, padded, or with trailing bits set.
            format!("strata_{id}_{}+", &secret[..42]),
            format!("strata_{id}_{}=", &secret[..42]),
            format!("strata_{id}_{}/", &secret[..42]),
            // Not ASCII where the parts meet: no panic on a char boundary.
            format!("strata_{}é{secret}", &id[..15]),
        ];
        for case in &cases {
            assert_eq!(Token::parse(case), None, "{case:?}");
        }
        // 43 characters carry 258 bits: the last character's two low bits
        // must be zero, else two texts would name one secret.
        let last = secret.chars().last().unwrap();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.find(last).unwrap();
        let other = alphabet.as_bytes()[index ^ 1] as char;
        let twin = format!("strata_{id}_{}{other}", &secret[..42]);
        assert_eq!(Token::parse(&twin), None, "{twin}");
    }

    #[test]
    fn debug_hides_the_secret() {
        let token = Token::generate().unwrap();
        let shown = format!("{token:?}");
        let text = token.reveal();
        assert!(shown.contains(token.id()), "{shown}");
        assert!(!shown.contains(&text[24..]), "{shown}");
    }
}
