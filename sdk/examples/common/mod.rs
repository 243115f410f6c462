//! What the examples share: credentials and a CA from the environment.
//!
//! - `STRATA_TOKEN`: an API key (`strata keys create …` prints one) or a
//!   JWT, sent with every call; `strata serve` wants one (`strata dev` does
//!   not).
//! - `STRATA_CA`: the PEM file of the certificate authority that signed
//!   the node's certificate, for `https://` URLs with a private CA.

use strata_sdk::ClientBuilder;

/// `builder` with the token and CA the environment names.
///
/// # Errors
///
/// The CA file cannot be read or is no PEM certificate.
pub fn from_env(mut builder: ClientBuilder) -> Result<ClientBuilder, Box<dyn std::error::Error>> {
    if let Ok(token) = std::env::var("STRATA_TOKEN") {
        builder = builder.api_key(token);
    }
    if let Ok(path) = std::env::var("STRATA_CA") {
        let pem = std::fs::read(&path).map_err(|e| format!("STRATA_CA={path}: {e}"))?;
        builder = builder.ca_certificate(&pem)?;
    }
    Ok(builder)
}
