//! The client side of the dashboard's HTTP API: what `oxray job` uses (as
//! Ray's `JobSubmissionClient`), and a plain blocking HTTP/1.1 request for
//! anything else that speaks HTTP on loopback (tests read `/metrics` and
//! drive chromedriver with it).
//!
//! One connection per request keeps it simple; these are command-line and
//! polling calls, a few per second at most.

use crate::error::{DashboardError, Result};
use crate::jobs::{JobDetails, JobSubmitRequest};
use crate::logs::LogChunk;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::de::DeserializeOwned;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `HOST:PORT` from `HOST:PORT`, `http://HOST:PORT` or `http://HOST:PORT/`.
pub fn normalize_address(address: &str) -> Result<String> {
    let bare = address
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let valid = bare
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        && !bare.contains('/');
    if valid {
        Ok(bare.to_string())
    } else {
        Err(DashboardError::BadAddress {
            address: address.to_string(),
        })
    }
}

/// One HTTP/1.1 request to `address` (`HOST:PORT`), waiting for the whole
/// answer.
pub fn http_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<HttpResponse> {
    let unreachable = |message: String| DashboardError::Unreachable {
        address: address.to_string(),
        message,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DashboardError::Runtime)?;
    runtime.block_on(async {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
            .await
            .map_err(|_| unreachable("timed out connecting".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, address);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| unreachable(format!("bad request {method} {path}: {e}")))?;
        let exchange = async {
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            let body = response.into_body().collect().await?.to_bytes().to_vec();
            Ok::<_, hyper::Error>(HttpResponse {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer to {method} {path}")))?
            .map_err(|e| unreachable(e.to_string()))
    })
}

/// Talks to one dashboard with the cluster token.
#[derive(Debug, Clone)]
pub struct DashboardClient {
    address: String,
    token: String,
}

impl DashboardClient {
    /// `address` is `HOST:PORT` or `http://HOST:PORT`.
    pub fn new(address: &str, token: &str) -> Result<Self> {
        Ok(DashboardClient {
            address: normalize_address(address)?,
            token: token.to_string(),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// A request with the token; a refusal or an error status is an error.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<HttpResponse> {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        self.send(method, path, body)
    }

    /// [`request`](Self::request) with a body of any type, `(content type,
    /// bytes)`.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<HttpResponse> {
        let bearer = format!("Bearer {}", self.token);
        let mut headers = vec![("authorization", bearer.as_str())];
        let body = body.map(|(content_type, bytes)| {
            headers.push(("content-type", content_type));
            bytes
        });
        let response = http_request(&self.address, method, path, &headers, body)?;
        match response.status {
            200..=299 => Ok(response),
            401 => Err(DashboardError::Unauthorized {
                address: self.address.clone(),
            }),
            status => {
                let text = response.text();
                let message = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("error")?.as_str().map(str::to_string))
                    .unwrap_or(text);
                Err(DashboardError::Api {
                    address: self.address.clone(),
                    method: method.to_string(),
                    path: path.to_string(),
                    status,
                    message,
                })
            }
        }
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T> {
        let response = self.request(method, path, body)?;
        serde_json::from_slice(&response.body).map_err(|source| DashboardError::BadAnswer {
            address: self.address.clone(),
            error: source,
        })
    }

    /// Makes the head hold `archive` (a working directory packed by
    /// `oxray_core::pack_working_dir`, named by `digest`), uploading it only
    /// if it does not already; returns the URI a job's
    /// `runtime_env.working_dir` names it by.
    pub fn upload_package(&self, digest: &str, archive: Vec<u8>) -> Result<String> {
        let path = format!("/api/packages/{digest}");
        match self.request("GET", &path, None) {
            Ok(_) => {}
            Err(DashboardError::Api { status: 404, .. }) => {
                self.send("PUT", &path, Some(("application/octet-stream", archive)))?;
            }
            Err(other) => return Err(other),
        }
        Ok(format!("{}{digest}", crate::packages::PACKAGE_SCHEME))
    }

    /// Submits a job; returns its submission id.
    pub fn submit_job(&self, request: &JobSubmitRequest) -> Result<String> {
        #[derive(serde::Deserialize)]
        struct Submitted {
            submission_id: String,
        }
        let body = serde_json::to_value(request).map_err(|source| DashboardError::BadAnswer {
            address: self.address.clone(),
            error: source,
        })?;
        let submitted: Submitted = self.call("POST", "/api/jobs/", Some(&body))?;
        Ok(submitted.submission_id)
    }

    pub fn list_jobs(&self) -> Result<Vec<JobDetails>> {
        self.call("GET", "/api/jobs/", None)
    }

    pub fn job(&self, id: &str) -> Result<JobDetails> {
        self.call("GET", &format!("/api/jobs/{id}"), None)
    }

    pub fn job_logs(&self, id: &str, offset: u64) -> Result<LogChunk> {
        self.call("GET", &format!("/api/jobs/{id}/logs?offset={offset}"), None)
    }

    /// Whether the job was running (and is now being stopped).
    pub fn stop_job(&self, id: &str) -> Result<bool> {
        #[derive(serde::Deserialize)]
        struct Stopped {
            stopped: bool,
        }
        let stopped: Stopped = self.call("POST", &format!("/api/jobs/{id}/stop"), None)?;
        Ok(stopped.stopped)
    }

    pub fn delete_job(&self, id: &str) -> Result<()> {
        self.request("DELETE", &format!("/api/jobs/{id}"), None)
            .map(|_| ())
    }

    /// The Prometheus exposition at `/metrics`.
    pub fn metrics(&self) -> Result<String> {
        self.request("GET", "/metrics", None).map(|r| r.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_or_without_scheme() {
        assert_eq!(
            normalize_address("127.0.0.1:8265").unwrap(),
            "127.0.0.1:8265"
        );
        assert_eq!(
            normalize_address("http://127.0.0.2:8265/").unwrap(),
            "127.0.0.2:8265"
        );
        for bad in ["", "127.0.0.1", "http://h:99999", "h:1/x"] {
            assert!(normalize_address(bad).is_err(), "{bad}");
        }
    }
}
