//! Mutual TLS on every network connection between oxray processes.
//!
//! The cluster token proves a caller may use the cluster, but on its own it
//! crosses the network in a header and whoever sniffs it chooses the
//! executable every node runs. With TLS on, every connection (to the head, to
//! a node's object server, between collective ranks) is encrypted and both
//! ends show a certificate signed by the cluster's CA; a peer without one is
//! refused during the handshake, before any oxray message is read.
//!
//! Configuration follows Ray's `RAY_USE_TLS` / `RAY_TLS_SERVER_CERT` /
//! `RAY_TLS_SERVER_KEY` / `RAY_TLS_CA_CERT`: the same variables prefixed
//! `OXRAY_`, read once per process. They are environment variables (the CLI's
//! `--tls-*` flags set them) because every process a node starts (workers,
//! daemons) inherits them, so no message ever has to carry key material.
//!
//! Every node's certificate names the DNS name [`SERVER_NAME`], and clients
//! check that name rather than the address they dialled: nodes join by IP
//! address, and what matters is that the peer holds a certificate of this
//! cluster's CA, not which of the cluster's machines it is.

use crate::error::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// `1` (or `true`) turns mutual TLS on; the three variables below must then
/// name the files.
pub const USE_TLS_ENV: &str = "OXRAY_USE_TLS";
/// This process's certificate (PEM), signed by the cluster CA.
pub const CERT_ENV: &str = "OXRAY_TLS_SERVER_CERT";
/// The private key of that certificate (PEM); must be private (0600).
pub const KEY_ENV: &str = "OXRAY_TLS_SERVER_KEY";
/// The cluster CA's certificate (PEM): the only issuer peers are trusted from.
pub const CA_ENV: &str = "OXRAY_TLS_CA_CERT";
/// The name every node certificate carries and every client checks.
pub const SERVER_NAME: &str = "oxray";
/// How long a peer may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where this process's certificate, key and CA live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The files named by `OXRAY_USE_TLS` and `OXRAY_TLS_*`; `None` when TLS
    /// is off.
    pub fn from_env() -> Result<Option<TlsFiles>> {
        let enabled = std::env::var(USE_TLS_ENV).unwrap_or_default();
        match enabled.trim().to_ascii_lowercase().as_str() {
            "" | "0" | "false" => return Ok(None),
            "1" | "true" => {}
            other => {
                return Err(tls_error(
                    USE_TLS_ENV,
                    format!("{other:?} is neither 1 nor 0"),
                ))
            }
        }
        let file = |name: &str| match std::env::var_os(name) {
            Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
            _ => Err(tls_error(
                name,
                format!("{USE_TLS_ENV}=1 needs {CERT_ENV}, {KEY_ENV} and {CA_ENV}"),
            )),
        };
        Ok(Some(TlsFiles {
            cert: file(CERT_ENV)?,
            key: file(KEY_ENV)?,
            ca: file(CA_ENV)?,
        }))
    }

    /// Sets `OXRAY_USE_TLS` and `OXRAY_TLS_*` to these files, so this process
    /// and every process it starts use them. Call before any thread starts.
    pub fn export_to_env(&self) {
        std::env::set_var(USE_TLS_ENV, "1");
        std::env::set_var(CERT_ENV, &self.cert);
        std::env::set_var(KEY_ENV, &self.key);
        std::env::set_var(CA_ENV, &self.ca);
    }

    /// Reads and checks the files: the certificate and CA must parse, the
    /// key must be this user's own and private, and the key must match the
    /// certificate.
    pub fn load(&self) -> Result<ClusterTls> {
        let cert_pem = read_public(&self.cert)?;
        let ca_pem = read_public(&self.ca)?;
        let key_pem = crate::session::read_private_file(&self.key)?
            .ok_or_else(|| tls_error(&self.key.display().to_string(), "no such file"))?
            .into_bytes();
        let chain = certificates(&self.cert, &cert_pem)?;
        let roots = certificates(&self.ca, &ca_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            tls_error(
                &self.key.display().to_string(),
                format!("no PEM private key: {e}"),
            )
        })?;
        let mut trusted = rustls::RootCertStore::empty();
        for root in roots {
            trusted.add(root).map_err(|e| {
                tls_error(
                    &self.ca.display().to_string(),
                    format!("not a CA certificate: {e}"),
                )
            })?;
        }
        let trusted = Arc::new(trusted);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mismatch = |e: rustls::Error| {
            tls_error(
                &self.key.display().to_string(),
                format!("does not fit {}: {e}", self.cert.display()),
            )
        };
        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            trusted.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| tls_error(&self.ca.display().to_string(), e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("rustls", e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(mismatch)?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("rustls", e.to_string()))?
            .with_root_certificates(trusted)
            .with_client_auth_cert(chain, key)
            .map_err(mismatch)?;
        Ok(ClusterTls {
            cert_pem,
            key_pem,
            ca_pem,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// This process's loaded certificate, key and CA, as the configurations of
/// both ends of a connection.
pub struct ClusterTls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls { .. }")
    }
}

impl ClusterTls {
    /// For a gRPC server: present this node's certificate, require a client
    /// certificate of the cluster CA.
    pub(crate) fn grpc_server(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(false)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// For a gRPC client: trust only the cluster CA, show this process's
    /// certificate.
    pub(crate) fn grpc_client(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
            .domain_name(SERVER_NAME)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The rustls server configuration (for sockets that are not gRPC).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// The rustls client configuration (for sockets that are not gRPC).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// The name a client checks in the server's certificate.
    pub fn server_name() -> rustls::pki_types::ServerName<'static> {
        rustls::pki_types::ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
    }
}

/// This process's TLS configuration from the environment, loaded once;
/// `None` when TLS is off.
pub fn cluster_tls() -> Result<Option<Arc<ClusterTls>>> {
    static LOADED: OnceLock<Result<Option<Arc<ClusterTls>>>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            Ok(TlsFiles::from_env()?
                .map(|f| f.load())
                .transpose()?
                .map(Arc::new))
        })
        .clone()
}

/// A channel configuration to the gRPC server at `address` (`host:port`),
/// with mutual TLS when it is on.
pub(crate) fn grpc_endpoint(address: &str) -> Result<tonic::transport::Endpoint> {
    let tls = cluster_tls()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| Error::Runtime(format!("bad address {address}: {e}")))?;
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.grpc_client())
            .map_err(|e| tls_error(address, e.to_string())),
        None => Ok(endpoint),
    }
}

/// A gRPC server builder with mutual TLS when it is on.
pub(crate) fn grpc_server() -> Result<tonic::transport::Server> {
    let builder = tonic::transport::Server::builder();
    match cluster_tls()? {
        Some(tls) => builder
            .tls_config(tls.grpc_server())
            .map_err(|e| tls_error("server", e.to_string())),
        None => Ok(builder),
    }
}

fn read_public(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| tls_error(&path.display().to_string(), e.to_string()))
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let parsed: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| {
            tls_error(
                &path.display().to_string(),
                format!("malformed PEM certificate: {e}"),
            )
        })?;
    if parsed.is_empty() {
        return Err(tls_error(
            &path.display().to_string(),
            "holds no PEM certificate",
        ));
    }
    Ok(parsed)
}

fn tls_error(what: &str, problem: impl Into<String>) -> Error {
    Error::Tls {
        what: what.to_string(),
        problem: problem.into(),
    }
}
