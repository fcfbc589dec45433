//! Cluster tokens.
//!
//! Every cluster has a random token; every gRPC call to a head or node must
//! carry it in the `x-oxray-token` header or is refused with
//! `UNAUTHENTICATED` before any handler runs (unlike Ray before 2.52, where an
//! open port meant remote code execution). The embedded cluster makes a token
//! too and hands it to its workers through the environment.

use crate::error::{Error, Result};
use std::io::Read;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

pub const TOKEN_ENV: &str = "OXRAY_TOKEN";
const HEADER: &str = "x-oxray-token";

/// A new random token: 128 bits from the kernel, as hex.
pub fn generate_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::runtime("cannot read /dev/urandom for a cluster token", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Server side: refuses calls without the token.
#[derive(Clone)]
pub struct RequireToken {
    token: String,
}

impl RequireToken {
    pub fn new(token: &str) -> Self {
        RequireToken {
            token: token.to_string(),
        }
    }
}

impl tonic::service::Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request.metadata().get(HEADER).and_then(|v| v.to_str().ok());
        if presented.is_some_and(|t| constant_time_eq(t.as_bytes(), self.token.as_bytes())) {
            return Ok(request);
        }
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown peer".to_string(), |a| a.to_string());
        eprintln!("oxray: refused a connection from {peer}: cluster token missing or wrong");
        Err(Status::unauthenticated(
            "cluster token missing or wrong: pass --token, set OXRAY_TOKEN, or run where `oxray start --head` wrote its session",
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

/// Compares a presented token with the cluster's in time independent of
/// where they differ (the dashboard checks tokens with it too).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Turns a refusal into an error that says what to do.
pub fn explain_refusal(status: &Status, what: &str, address: &str) -> Error {
    Error::Runtime(format!(
        "{what} at {address} refused the connection: {}",
        status.message()
    ))
}
