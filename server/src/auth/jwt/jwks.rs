//! The keys JWTs are checked against: a JSON Web Key Set (RFC 7517) read
//! from a file or fetched from a URL, reduced to the keys Strata can use.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Where the key set comes from (`--jwt-jwks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A file, read once at start.
    File(PathBuf),
    /// An `https://` URL (`http://` on loopback only), fetched at start and
    /// refreshed.
    Url(url::Url),
}

impl JwksSource {
    /// A URL when `text` starts with `http://` or `https://`, else a file
    /// path.
    ///
    /// # Errors
    ///
    /// What is wrong with `text`, for people.
    pub fn parse(text: &str) -> Result<JwksSource, String> {
        if text.starts_with("http://") || text.starts_with("https://") {
            let url =
                url::Url::parse(text).map_err(|e| format!("{text:?} is not a valid URL: {e}"))?;
            // Whoever is on the path of a plain-HTTP fetch could hand the
            // node a signing key of their own.
            let loopback = match url.host() {
                Some(url::Host::Domain(name)) => name == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if url.scheme() == "http" && !loopback {
                return Err(format!(
                    "{text:?} is plain HTTP: anyone on the way could give the node keys of their \
                     own; use the issuer's https:// URL"
                ));
            }
            return Ok(JwksSource::Url(url));
        }
        if text.is_empty() {
            return Err("is empty: give a JWKS file or an https:// URL".into());
        }
        Ok(JwksSource::File(text.into()))
    }
}

impl fmt::Display for JwksSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksSource::File(path) => write!(f, "{}", path.display()),
            JwksSource::Url(url) => write!(f, "{url}"),
        }
    }
}

/// One usable public key.
pub(super) struct VerifyingKey {
    /// The algorithm it verifies: derived from its type and curve.
    pub(super) algorithm: Algorithm,
    pub(super) key: DecodingKey,
}

/// The usable keys of a JWKS, by `kid`.
#[derive(Default)]
pub(super) struct KeySet {
    by_kid: HashMap<String, Arc<VerifyingKey>>,
    /// The set's key when it holds exactly one: it also verifies tokens
    /// that name no `kid`.
    lone: Option<Arc<VerifyingKey>>,
}

/// How a key was looked up.
pub(super) enum Found<'a> {
    /// The key.
    Key(&'a Arc<VerifyingKey>),
    /// No key of that id.
    Unknown,
    /// The token names no `kid` and the set holds several keys.
    Ambiguous(usize),
}

impl KeySet {
    /// The key for a token's `kid`.
    pub(super) fn find(&self, kid: Option<&str>) -> Found<'_> {
        match (kid, &self.lone) {
            (Some(kid), _) => self.by_kid.get(kid).map_or(Found::Unknown, Found::Key),
            (None, Some(key)) => Found::Key(key),
            (None, None) => Found::Ambiguous(self.len()),
        }
    }

    /// How many keys it holds.
    pub(super) fn len(&self) -> usize {
        self.by_kid.len() + usize::from(self.lone.is_some() && self.by_kid.is_empty())
    }

    /// Their ids, sorted, for logs.
    pub(super) fn ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.by_kid.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }
}

/// The largest key set read or fetched, in bytes.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Reads a key set's JSON into the keys Strata can use: RSA (RS256), EC
/// P-256 (ES256) and Ed25519 (EdDSA) keys for signatures. Other keys
/// (encryption keys, HMAC secrets, other curves or algorithms) are skipped,
/// each with a reason in the second part of the answer.
///
/// # Errors
///
/// The JSON is not a JWKS, or it holds no usable key (with the reasons).
pub(super) fn parse(bytes: &[u8]) -> Result<(KeySet, Vec<String>), String> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "{} bytes; a key set of more than {MAX_JWKS_BYTES} is refused",
            bytes.len()
        ));
    }
    let raw: RawSet = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a JWKS (a JSON object {{\"keys\": [...]}}): {e}"))?;
    let mut set = KeySet::default();
    let mut skipped = Vec::new();
    let mut without_kid = Vec::new();
    for (i, value) in raw.keys.into_iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(jwk) => jwk,
            Err(e) => {
                skipped.push(format!("keys[{i}] is not a JWK: {e}"));
                continue;
            }
        };
        let name = jwk
            .common
            .key_id
            .clone()
            .map_or_else(|| format!("keys[{i}]"), |kid| format!("key {kid:?}"));
        match usable(&jwk) {
            Ok(key) => match jwk.common.key_id {
                Some(kid) if set.by_kid.contains_key(&kid) => {
                    skipped.push(format!("{name} appears twice; the first is used"));
                }
                Some(kid) => {
                    set.by_kid.insert(kid, Arc::new(key));
                }
                None => without_kid.push(Arc::new(key)),
            },
            Err(why) => skipped.push(format!("{name} is skipped: {why}")),
        }
    }
    let keys = set.by_kid.len() + without_kid.len();
    if keys == 0 {
        return Err(format!(
            "it holds no key Strata can use (RSA, EC P-256 or Ed25519 signing keys, for \
             RS256, ES256 and EdDSA){}",
            if skipped.is_empty() {
                String::new()
            } else {
                format!(": {}", skipped.join("; "))
            }
        ));
    }
    if keys == 1 {
        set.lone = without_kid
            .pop()
            .or_else(|| set.by_kid.values().next().cloned());
    } else if !without_kid.is_empty() {
        skipped.push(format!(
            "{} key(s) without a `kid` are skipped: in a set of several keys a token must \
             name its key",
            without_kid.len()
        ));
    }
    Ok((set, skipped))
}

/// The key of `jwk`, when Strata can verify signatures with it.
fn usable(jwk: &Jwk) -> Result<VerifyingKey, String> {
    if let Some(key_use) = &jwk.common.public_key_use
        && *key_use != PublicKeyUse::Signature
    {
        return Err(format!("its `use` is {key_use:?}, not \"sig\""));
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            return Err(format!("curve {:?}; Strata takes P-256 (ES256)", ec.curve));
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            return Err(format!("curve {:?}; Strata takes Ed25519", okp.curve));
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("a shared secret (kty \"oct\", HS*): Strata takes public keys only".into());
        }
        _ => return Err("a key type Strata does not take (RSA, EC or OKP)".into()),
    };
    let named = jwk.common.key_algorithm;
    let agrees = match named {
        None => true,
        Some(KeyAlgorithm::RS256) => algorithm == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => algorithm == Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => algorithm == Algorithm::EdDSA,
        Some(_) => false,
    };
    if !agrees {
        return Err(format!(
            "its `alg` is {:?}; Strata takes RS256, ES256 and EdDSA",
            named.expect("a named algorithm")
        ));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("its numbers do not decode: {e}"))?;
    Ok(VerifyingKey { algorithm, key })
}

/// How long one fetch of a JWKS URL may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP client of the JWKS fetches.
pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client with these settings builds")
}

/// Fetches and parses the key set at `url`.
///
/// # Errors
///
/// What failed: the connection, the status, or the content.
pub(super) async fn fetch(
    client: &reqwest::Client,
    url: &url::Url,
) -> Result<(KeySet, Vec<String>), String> {
    let response = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("cannot fetch it: {}", strata_pg::report::describe(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("it answered {status}"));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err(format!("it is over {MAX_JWKS_BYTES} bytes"));
    }
    // Read with a running cap: a chunked answer has no length to check.
    let mut response = response;
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("its answer broke off: {e}"))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("it is over {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    parse(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: &str) -> Result<(KeySet, Vec<String>), String> {
        parse(format!("{{\"keys\": [{keys}]}}").as_bytes())
    }

    const ED: &str = r#"{"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "EFAgoNG_CX0r6837BxuYqlf9Xjn3_EUEQDE7ryZqF68"}"#;
    const EC: &str = r#"{"kty": "EC", "crv": "P-256", "kid": "ec", "x": "H6DSj2cQR7X9BRwxRDyhxsojUl-os8GWNozO92ONU28", "y": "5Q0nQgPPBrZ4OwVBiAYlpRk9Dm1aB8SzVYMMsqDG18Q"}"#;

    #[test]
    fn keys_are_found_by_kid_and_a_lone_key_also_without() {
        let (keys, skipped) = set(&format!("{ED}, {EC}")).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(keys.ids(), ["ec", "ed"]);
        assert!(matches!(keys.find(Some("ed")), Found::Key(k) if k.algorithm == Algorithm::EdDSA));
        assert!(matches!(keys.find(Some("ec")), Found::Key(k) if k.algorithm == Algorithm::ES256));
        assert!(matches!(keys.find(Some("x")), Found::Unknown));
        assert!(matches!(keys.find(None), Found::Ambiguous(2)));
        let (lone, _) = set(ED).unwrap();
        assert!(matches!(lone.find(None), Found::Key(_)));
    }

    #[test]
    fn unusable_keys_are_skipped_with_a_reason() {
        let hmac = r#"{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}"#;
        let enc = r#"{"kty": "OKP", "crv": "Ed25519", "kid": "e", "use": "enc", "x": "EFAgoNG_CX0r6837BxuYqlf9Xjn3_EUEQDE7ryZqF68"}"#;
        let ps = r#"{"kty": "EC", "crv": "P-256", "kid": "p", "alg": "ES384", "x": "H6DSj2cQR7X9BRwxRDyhxsojUl-os8GWNozO92ONU28", "y": "5Q0nQgPPBrZ4OwVBiAYlpRk9Dm1aB8SzVYMMsqDG18Q"}"#;
        let (keys, skipped) = set(&format!("{hmac}, {enc}, {ps}, {ED}")).unwrap();
        assert_eq!(keys.ids(), ["ed"]);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped[0].contains("shared secret"), "{skipped:?}");
        assert!(skipped[1].contains("use"), "{skipped:?}");
        assert!(skipped[2].contains("ES384"), "{skipped:?}");
    }

    #[test]
    fn a_set_without_usable_keys_or_not_a_set_is_refused() {
        let err = set(r#"{"kty": "oct", "k": "c2VjcmV0"}"#)
            .err()
            .expect("refused");
        assert!(err.contains("no key Strata can use"), "{err}");
        let err = parse(b"[1, 2]").err().expect("refused");
        assert!(err.contains("not a JWKS"), "{err}");
        assert!(JwksSource::parse("").is_err());
        assert_eq!(
            JwksSource::parse("keys.json").unwrap(),
            JwksSource::File("keys.json".into())
        );
        assert!(matches!(
            JwksSource::parse("https://idp.example/jwks").unwrap(),
            JwksSource::Url(_)
        ));
    }

    #[test]
    fn plain_http_is_taken_on_loopback_only() {
        for local in [
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9/jwks",
        ] {
            assert!(
                matches!(JwksSource::parse(local), Ok(JwksSource::Url(_))),
                "{local}"
            );
        }
        let err = JwksSource::parse("http://idp.example/jwks").unwrap_err();
        assert!(
            err.contains("plain HTTP") && err.contains("https://"),
            "{err}"
        );
    }
}
