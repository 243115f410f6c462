//! `--tls-cert` and `--tls-key` (API.md, Security → TLS and limits): the
//! node's certificate and key, read and checked before anything starts, and
//! read again on SIGHUP.
//!
//! [`Tls`] holds one rustls server configuration for the node's life; its
//! certificate comes from a resolver whose certificate and key a reload
//! swaps, so that new handshakes get the new pair while the connections
//! already open keep theirs. A reload that fails leaves the old pair in
//! place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use clap::Args;
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::ConfigError;

/// The TLS flags `serve` and `dev` share.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM file of the node's certificate chain (the node's own certificate
    /// first, then any intermediates). With --tls-key, the node serves HTTPS
    /// only; SIGHUP reads both files again.
    #[arg(long, env = "STRATA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the private key of --tls-cert (PKCS #8, PKCS #1 or SEC1,
    /// unencrypted).
    #[arg(long, env = "STRATA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS setup when both flags are given, `None` when neither is.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the flag: one given without the
    /// other, or a file that cannot be read or used ([`TlsError`]).
    pub fn validate(&self) -> Result<Option<Tls>, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError::Invalid {
                flag: "--tls-cert",
                message: "needs --tls-key (STRATA_TLS_KEY) too: give both to serve HTTPS, or \
                          neither to serve plain HTTP"
                    .into(),
            }),
            (None, Some(_)) => Err(ConfigError::Invalid {
                flag: "--tls-key",
                message: "needs --tls-cert (STRATA_TLS_CERT) too: give both to serve HTTPS, or \
                          neither to serve plain HTTP"
                    .into(),
            }),
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                };
                Tls::load(files)
                    .map(Some)
                    .map_err(|error| ConfigError::Invalid {
                        flag: error.flag(),
                        message: error.to_string(),
                    })
            }
        }
    }
}

/// Where the certificate chain and its key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--tls-cert`: PEM certificates, the node's own first.
    pub cert: PathBuf,
    /// `--tls-key`: the PEM private key of the first certificate.
    pub key: PathBuf,
}

/// Why the certificate or key cannot be used. Each message names the file
/// and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read (missing, no permission, a folder).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The flag the file came from.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not PEM, or its PEM is damaged.
    #[error("{} is not a readable PEM file ({detail}); {expected}", path.display())]
    Pem {
        /// The flag the file came from.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        detail: String,
        /// What the file should hold.
        expected: &'static str,
    },
    /// A PEM file without a section of the kind needed.
    #[error("{} holds no {wanted}; {expected}", path.display())]
    Missing {
        /// The flag the file came from.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What was looked for.
        wanted: &'static str,
        /// What the file should hold.
        expected: &'static str,
    },
    /// The certificate is not valid X.509, or the key is of a kind the
    /// crypto provider cannot sign with.
    #[error("{} cannot be used: {detail}", path.display())]
    Unusable {
        /// The flag the file came from.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What rustls said.
        detail: String,
    },
    /// The key is not the one the certificate was issued for.
    #[error(
        "the key in {} does not belong to the certificate in {} (their public keys differ); \
         give the key the certificate was made for",
        key.display(),
        cert.display()
    )]
    Mismatch {
        /// `--tls-cert`.
        cert: PathBuf,
        /// `--tls-key`.
        key: PathBuf,
    },
}

const CERT_EXPECTED: &str = "--tls-cert needs the node's certificate (and any intermediates) as -----BEGIN CERTIFICATE----- blocks";
const KEY_EXPECTED: &str = "--tls-key needs an unencrypted private key as a -----BEGIN PRIVATE KEY----- \
     (or RSA / EC PRIVATE KEY) block";

impl TlsError {
    /// The flag whose file is at fault.
    pub fn flag(&self) -> &'static str {
        match self {
            TlsError::Read { flag, .. }
            | TlsError::Pem { flag, .. }
            | TlsError::Missing { flag, .. }
            | TlsError::Unusable { flag, .. } => flag,
            TlsError::Mismatch { .. } => "--tls-key",
        }
    }
}

impl TlsFiles {
    /// Reads and checks both files: PEM, a certificate first, a key the
    /// crypto provider can sign with, and the key matching the certificate.
    ///
    /// # Errors
    ///
    /// [`TlsError`], naming the file and what is wrong with it.
    pub fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let cert_pem = read(&self.cert, "--tls-cert")?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error("--tls-cert", &self.cert, e, CERT_EXPECTED))?;
        if chain.is_empty() {
            return Err(TlsError::Missing {
                flag: "--tls-cert",
                path: self.cert.clone(),
                wanted: "certificate",
                expected: CERT_EXPECTED,
            });
        }
        let key_pem = read(&self.key, "--tls-key")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError::Missing {
                flag: "--tls-key",
                path: self.key.clone(),
                wanted: "private key",
                expected: KEY_EXPECTED,
            },
            e => pem_error("--tls-key", &self.key, e, KEY_EXPECTED),
        })?;
        let signing_key =
            provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| TlsError::Unusable {
                    flag: "--tls-key",
                    path: self.key.clone(),
                    detail: format!("{e} (keys of RSA, ECDSA P-256/P-384 and Ed25519 are served)"),
                })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => Ok(certified),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(TlsError::Mismatch {
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                })
            }
            // The key cannot tell its public half: nothing to compare.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(e) => Err(TlsError::Unusable {
                flag: "--tls-cert",
                path: self.cert.clone(),
                detail: format!("its first certificate is not valid X.509 ({e})"),
            }),
        }
    }
}

fn read(path: &Path, flag: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(
    flag: &'static str,
    path: &Path,
    error: pem::Error,
    expected: &'static str,
) -> TlsError {
    TlsError::Pem {
        flag,
        path: path.to_owned(),
        detail: error.to_string(),
        expected,
    }
}

/// The node's TLS: one rustls server configuration whose certificate and
/// key [`Tls::reload`] replaces. Clones share the same state.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// The certificate and key new handshakes get.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a whole pair (the writer only swaps an Arc).
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

impl Tls {
    /// Reads `files` and builds the server configuration: TLS 1.2 and 1.3
    /// with aws-lc-rs, HTTP/1.1 announced by ALPN.
    ///
    /// # Errors
    ///
    /// [`TlsError`] for a file that cannot be read or used.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = files.load(&provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Unusable {
                flag: "--tls-cert",
                path: files.cert.clone(),
                detail: format!("the TLS library refused its default protocol versions ({e})"),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        // The node speaks HTTP/1.1 only (hyper's http1): say so, so that a
        // client offering h2 settles on HTTP/1.1 during the handshake.
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            files,
            provider,
            current,
            server: Arc::new(server),
        })
    }

    /// Reads the files again; new handshakes get the new certificate and
    /// key, connections already open keep theirs.
    ///
    /// # Errors
    ///
    /// [`TlsError`]: the files cannot be read or used, and the certificate
    /// served so far stays in place.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = self.files.load(&self.provider)?;
        *self.current.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// Where the certificate and key are read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The rustls configuration every handshake uses.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server)
    }
}
