//! Cluster tokens.
//!
//! Every cluster has a random token; every gRPC call to a head or node must
//! carry it in the `x-oxray-token` header or is refused with
//! `UNAUTHENTICATED` before any handler runs (unlike Ray before 2.52, where an
//! open port meant remote code execution). The embedded cluster makes a token
//! too and hands it to its workers through the environment.
//!
//! Channels that are not gRPC (the collective's peer-to-peer sockets) never
//! send the token: they prove knowledge of it with HMAC-SHA256 over fresh
//! challenges, keyed by [`derive_key`] so each use gets its own key and a key
//! that leaks from one use says nothing about the token.

use crate::error::{Error, Result};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;
use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

pub const TOKEN_ENV: &str = "OXRAY_TOKEN";
const HEADER: &str = "x-oxray-token";

/// A new random token: 128 bits from the kernel, as hex.
pub fn generate_token() -> Result<String> {
    let bytes: [u8; 16] = random_bytes()?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `N` random bytes from the kernel (tokens, nonces, in-process secrets).
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::runtime("cannot read /dev/urandom", e))?;
    Ok(bytes)
}

/// HMAC-SHA256 of `parts` (concatenated) under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A key for one `purpose`, derived from the cluster token: HMAC-SHA256 of
/// the purpose under the token, so the token itself never has to leave the
/// process.
pub fn derive_key(token: &str, purpose: &str) -> [u8; 32] {
    hmac_sha256(token.as_bytes(), &[b"oxray key for ", purpose.as_bytes()])
}

/// Server side: refuses calls without the token.
#[derive(Clone)]
pub struct RequireToken {
    token: String,
    refusals: Arc<Mutex<RefusalLog>>,
}

impl RequireToken {
    pub fn new(token: &str) -> Self {
        RequireToken {
            token: token.to_string(),
            refusals: Arc::default(),
        }
    }
}

/// Refusals logged per peer address in one window.
const LINES_PER_PEER: u32 = 3;
/// Refusals logged from all peers together in one window.
const LINES_PER_WINDOW: u32 = 20;
const WINDOW: Duration = Duration::from_secs(60);
/// Peers remembered in one window; more are only counted, so a flood from
/// many addresses cannot grow the map either.
const PEERS_PER_WINDOW: usize = 4096;

/// Keeps a flood of unauthenticated calls from flooding the log: a few lines
/// per peer and per minute, then one line saying how many were suppressed.
#[derive(Default)]
struct RefusalLog {
    window_start: Option<Instant>,
    per_peer: HashMap<IpAddr, u32>,
    logged: u32,
    suppressed: u64,
}

impl RefusalLog {
    /// Whether this refusal gets its own line; may first print the summary
    /// of the window that just ended.
    fn admit(&mut self, peer: Option<IpAddr>, now: Instant) -> bool {
        if self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= WINDOW)
        {
            if self.suppressed > 0 {
                eprintln!(
                    "oxray: {} more refused connections in the last {} s were not logged",
                    self.suppressed,
                    WINDOW.as_secs()
                );
            }
            *self = RefusalLog {
                window_start: Some(now),
                ..RefusalLog::default()
            };
        }
        let peer_lines = match peer {
            Some(ip)
                if self.per_peer.len() < PEERS_PER_WINDOW || self.per_peer.contains_key(&ip) =>
            {
                let lines = self.per_peer.entry(ip).or_insert(0);
                *lines += 1;
                *lines
            }
            _ => u32::MAX,
        };
        if peer_lines <= LINES_PER_PEER && self.logged < LINES_PER_WINDOW {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

impl tonic::service::Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request.metadata().get(HEADER).and_then(|v| v.to_str().ok());
        if presented.is_some_and(|t| constant_time_eq(t.as_bytes(), self.token.as_bytes())) {
            return Ok(request);
        }
        let address = request.remote_addr();
        if self
            .refusals
            .lock()
            .admit(address.map(|a| a.ip()), Instant::now())
        {
            let peer = address.map_or_else(|| "unknown peer".to_string(), |a| a.to_string());
            eprintln!("oxray: refused a connection from {peer}: cluster token missing or wrong");
        }
        Err(Status::unauthenticated(
            "cluster token missing or wrong: pass --token-file, set OXRAY_TOKEN, or run where `oxray start --head` wrote its session",
        ))
    }
}

/// Client side: adds the token to every call.
#[derive(Clone)]
pub struct AttachToken {
    value: MetadataValue<tonic::metadata::Ascii>,
}

impl AttachToken {
    pub fn new(token: &str) -> Result<Self> {
        let value = token.parse().map_err(|_| {
            Error::Runtime("the cluster token contains characters not allowed in a header".into())
        })?;
        Ok(AttachToken { value })
    }
}

impl tonic::service::Interceptor for AttachToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(HEADER, self.value.clone());
        Ok(request)
    }
}

/// Compares secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Turns a refusal into an error that says what to do.
pub fn explain_refusal(status: &Status, what: &str, address: &str) -> Error {
    // A plain-text client of a TLS server sees only a garbled HTTP/2 stream
    // ("h2 protocol error"), so name the likely cause.
    let hint = if status.code() != tonic::Code::Unauthenticated
        && matches!(crate::tls::cluster_tls(), Ok(None))
    {
        format!(
            " (if the cluster runs mutual TLS, pass --tls-cert, --tls-key and --tls-ca, or set {}=1 and {}, {}, {})",
            crate::tls::USE_TLS_ENV,
            crate::tls::CERT_ENV,
            crate::tls::KEY_ENV,
            crate::tls::CA_ENV
        )
    } else {
        String::new()
    };
    Error::Runtime(format!(
        "{what} at {address} refused the connection: {}{hint}",
        status.message()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_a_few_per_peer_and_window() {
        let mut log = RefusalLog::default();
        let start = Instant::now();
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let logged = (0..1000).filter(|_| log.admit(Some(one), start)).count();
        assert_eq!(logged, LINES_PER_PEER as usize);
        let many = (0..10_000u32)
            .filter(|i| log.admit(Some(IpAddr::from(i.to_be_bytes())), start))
            .count();
        assert_eq!(logged + many, LINES_PER_WINDOW as usize);
        assert!(log.per_peer.len() <= PEERS_PER_WINDOW);
        // A new window logs again.
        assert!(log.admit(Some(one), start + WINDOW));
        assert_eq!(log.suppressed, 0);
    }
}
