//! The raw socket operations under a [`Mesh`](crate::transport): connecting
//! and accepting against a deadline, non-blocking send/receive that report
//! "would block" instead of failing, `poll` over several sockets, and the
//! socket options every peer connection gets.
//!
//! They are plain `libc` calls on file descriptors rather than `std::net`
//! methods because the mesh drives many peers from one thread without
//! blocking on any of them, and needs `MSG_NOSIGNAL` so a peer that went away
//! is an error, not a signal.

use crate::error::{CollectiveError, OpKind};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Kernel send and receive buffer of a peer socket: a whole pipeline chunk
/// fits in flight.
const SOCKET_BUFFER_BYTES: libc::c_int = 4 * 1024 * 1024;

/// Outcome of one non-blocking transfer.
pub(crate) enum Transfer {
    Moved(usize),
    WouldBlock,
}

pub(crate) fn remaining_until(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

pub(crate) fn connect_with_deadline(
    address: &str,
    deadline: Instant,
) -> std::io::Result<TcpStream> {
    let mut last_error = None;
    for resolved in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(
            &resolved,
            remaining_until(deadline).max(Duration::from_millis(1)),
        ) {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "address resolves to nothing")
    }))
}

pub(crate) fn accept_with_deadline(
    listener: &TcpListener,
    deadline: Instant,
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    loop {
        match listener.accept() {
            Ok(accepted) => return Ok(accepted),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                let remaining = remaining_until(deadline);
                if remaining.is_zero() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "timed out",
                    ));
                }
                let mut entry = [libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }];
                poll_fds(&mut entry, remaining)?;
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

/// Blocks until one of `fds` reports an event or `timeout` passes (then
/// returns Ok; callers re-check their deadline).
pub(crate) fn poll_fds(fds: &mut [libc::pollfd], timeout: Duration) -> std::io::Result<()> {
    let millis = if timeout.is_zero() {
        0
    } else {
        timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int
    };
    // SAFETY: `fds` is a valid slice of pollfds of the given length.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
    if ready < 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}

pub(crate) fn socket_send(fd: RawFd, bytes: &[u8]) -> std::io::Result<Transfer> {
    loop {
        // SAFETY: `bytes` is a valid readable region of the given length;
        // MSG_NOSIGNAL turns a closed peer into EPIPE instead of SIGPIPE.
        let sent =
            unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        if sent >= 0 {
            return Ok(Transfer::Moved(sent as usize));
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::WouldBlock => return Ok(Transfer::WouldBlock),
            std::io::ErrorKind::Interrupted => continue,
            _ => return Err(error),
        }
    }
}

pub(crate) fn socket_receive(fd: RawFd, bytes: &mut [u8]) -> std::io::Result<Transfer> {
    loop {
        // SAFETY: `bytes` is a valid writable region of the given length.
        let received = unsafe { libc::recv(fd, bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if received > 0 {
            return Ok(Transfer::Moved(received as usize));
        }
        if received == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::WouldBlock => return Ok(Transfer::WouldBlock),
            std::io::ErrorKind::Interrupted => continue,
            _ => return Err(error),
        }
    }
}

pub(crate) fn tune_socket(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    for option in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        set_int_option(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            SOCKET_BUFFER_BYTES,
        )?;
    }
    Ok(())
}

fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed.
    let status = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Maps a failed send/recv on the socket to `peer` to the error a caller sees.
pub(crate) fn socket_error(
    rank: usize,
    peer: usize,
    op: OpKind,
    error: std::io::Error,
) -> CollectiveError {
    match error.kind() {
        std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::NotConnected
        | std::io::ErrorKind::UnexpectedEof => CollectiveError::PeerDisconnected { rank, peer, op },
        _ => CollectiveError::Io {
            rank,
            peer,
            op,
            error,
        },
    }
}
