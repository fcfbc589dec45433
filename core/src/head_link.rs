//! Reaching the head, and noticing when it stops answering.
//!
//! Workers, drivers and node daemons each hold one long-lived stream to the
//! head. A head that is SIGKILLed closes its sockets, but one that hangs, is
//! stopped or is cut off by the network closes nothing: the stream would just
//! stay silent and every caller waiting on it would block forever. So every
//! channel to the head runs HTTP/2 keepalive pings; a head that misses one for
//! [`KEEPALIVE_TIMEOUT`] ends the stream, and everything waiting on it gets
//! [`Error::HeadUnreachable`] — within [`HEAD_LOSS_DEADLINE`] of the head's
//! last answer.

use crate::error::{Error, Result};
use std::time::Duration;
use tonic::transport::Endpoint;

/// How often a quiet channel to the head pings it...
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// ...and how long a ping may go unanswered before the head counts as lost.
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a client takes to notice a silent head.
pub const HEAD_LOSS_DEADLINE: Duration = Duration::from_secs(7);
/// How long connecting to the head may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel configuration to the head at `address` (`host:port`), with
/// keepalive on (and mutual TLS when it is on).
pub(crate) fn endpoint(address: &str) -> Result<Endpoint> {
    Ok(crate::tls::grpc_endpoint(address)?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// The error of every call that needed the head at `address`.
pub(crate) fn unreachable(address: &str, message: impl Into<String>) -> Error {
    Error::HeadUnreachable {
        address: address.to_string(),
        message: message.into(),
    }
}

/// `error` and its causes, so a refused TLS handshake says why (tonic's own
/// message is only "transport error"). A cause that repeats the one before
/// it (hyper's "tcp connect error" over an io error that begins the same
/// way) is said once.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut said = text.clone();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if let Some(rest) = inner_text.strip_prefix(said.as_str()) {
            text.push_str(rest);
        } else if !said.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        said = inner_text;
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Chain(&'static str, Option<Box<Chain>>);

    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|c| c as _)
        }
    }

    fn chain(messages: &[&'static str]) -> Chain {
        let mut inner = None;
        for message in messages.iter().rev() {
            inner = Some(Box::new(Chain(message, inner)));
        }
        *inner.expect("one message at least")
    }

    #[test]
    fn causes_follow_the_error_each_said_once() {
        let refused = chain(&[
            "transport error",
            "tcp connect error",
            "tcp connect error: Connection refused (os error 111)",
            "Connection refused (os error 111)",
        ]);
        assert_eq!(
            with_causes(&refused),
            "transport error: tcp connect error: Connection refused (os error 111)"
        );
        let tls = chain(&["transport error", "invalid peer certificate: UnknownIssuer"]);
        assert_eq!(
            with_causes(&tls),
            "transport error: invalid peer certificate: UnknownIssuer"
        );
    }
}
