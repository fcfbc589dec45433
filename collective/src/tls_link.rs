//! Mutual TLS on one peer socket of a collective group.
//!
//! The mesh moves data with non-blocking `send`/`recv` and `poll`, never
//! blocking on one peer while another could make progress, so TLS cannot be a
//! blocking stream wrapper here. A [`TlsLink`] holds the rustls session of a
//! socket and offers the same non-blocking steps: plaintext goes into the
//! session only when its previous records have left (so at most one chunk is
//! ever buffered), and what is still buffered is pushed out whenever the mesh
//! waits ([`TlsLink::flush`]) and before an operation returns
//! ([`TlsLink::flush_blocking`]), so a peer never waits on bytes that sit in
//! this process.
//!
//! The handshake runs after the group's HMAC proof: a connection that does
//! not know the cluster token never reaches TLS, and one that does must still
//! show a certificate of the cluster CA. The connecting (lower) rank is the
//! TLS client.

use crate::socket::Transfer;
use oxray_core::tls::ClusterTls;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The most plaintext handed to the session per send: one TLS record.
const CHUNK_BYTES: usize = 16 * 1024;

pub(crate) struct TlsLink {
    session: rustls::Connection,
}

impl TlsLink {
    /// Runs the handshake on a blocking `stream` (its read timeout bounds
    /// each step); `client` is the side that connected.
    pub(crate) fn handshake(
        stream: &TcpStream,
        tls: &ClusterTls,
        client: bool,
    ) -> std::io::Result<TlsLink> {
        let invalid = |error: rustls::Error| std::io::Error::new(ErrorKind::InvalidData, error);
        let mut session: rustls::Connection = if client {
            rustls::ClientConnection::new(tls.client_config(), ClusterTls::server_name())
                .map_err(invalid)?
                .into()
        } else {
            rustls::ServerConnection::new(tls.server_config())
                .map_err(invalid)?
                .into()
        };
        let mut io = stream;
        while session.is_handshaking() {
            session.complete_io(&mut io)?;
        }
        // The client's last handshake flight may still be buffered.
        while session.wants_write() {
            session.write_tls(&mut io)?;
        }
        Ok(TlsLink { session })
    }

    /// Pushes buffered records into the non-blocking `stream` until it is
    /// done or the socket is full; true when nothing is left.
    pub(crate) fn flush(&mut self, stream: &TcpStream) -> std::io::Result<bool> {
        let mut io = stream;
        while self.session.wants_write() {
            match self.session.write_tls(&mut io) {
                Ok(_) => {}
                Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }

    /// Flushes until nothing is buffered, waiting for the socket to drain,
    /// until `deadline`.
    pub(crate) fn flush_blocking(
        &mut self,
        stream: &TcpStream,
        deadline: Instant,
    ) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        while !self.flush(stream)? {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ErrorKind::TimedOut.into());
            }
            let mut entry = [libc::pollfd {
                fd: stream.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            }];
            let millis = remaining.min(Duration::from_secs(1)).as_millis().max(1) as libc::c_int;
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(entry.as_mut_ptr(), 1, millis) };
        }
        Ok(())
    }

    /// True when records wait to be written.
    pub(crate) fn pending(&self) -> bool {
        self.session.wants_write()
    }

    /// Encrypts up to one chunk of `bytes` for the peer, without waiting.
    pub(crate) fn send(&mut self, stream: &TcpStream, bytes: &[u8]) -> std::io::Result<Transfer> {
        if !self.flush(stream)? {
            return Ok(Transfer::WouldBlock);
        }
        let taken = self
            .session
            .writer()
            .write(&bytes[..bytes.len().min(CHUNK_BYTES)])?;
        if taken == 0 {
            return Ok(Transfer::WouldBlock);
        }
        self.flush(stream)?;
        Ok(Transfer::Moved(taken))
    }

    /// Reads the records waiting on `stream` of a link that carries no data
    /// (a shared-memory peer's): true when they were only TLS's own (session
    /// tickets, key updates), false when the peer sent data; an error of
    /// kind `UnexpectedEof` when it closed the session or the socket.
    pub(crate) fn take_control_records(&mut self, stream: &TcpStream) -> std::io::Result<bool> {
        let mut byte = [0u8; 1];
        Ok(matches!(
            self.receive(stream, &mut byte)?,
            Transfer::WouldBlock
        ))
    }

    /// Decrypts what the peer has sent, up to `bytes.len()`, without waiting.
    pub(crate) fn receive(
        &mut self,
        stream: &TcpStream,
        bytes: &mut [u8],
    ) -> std::io::Result<Transfer> {
        let mut io = stream;
        loop {
            match self.session.reader().read(bytes) {
                // The peer closed the session (close_notify).
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(count) => return Ok(Transfer::Moved(count)),
                Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
            match self.session.read_tls(&mut io) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(_) => {
                    self.session
                        .process_new_packets()
                        .map_err(|error| std::io::Error::new(ErrorKind::InvalidData, error))?;
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    return Ok(Transfer::WouldBlock)
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
}
