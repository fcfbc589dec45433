//! Peer-to-peer TCP connections between the ranks of a group, and the byte
//! counters every rank keeps.
//!
//! Each rank binds its own listener, publishes its address through the
//! [`Rendezvous`], connects to every higher rank and accepts every lower one,
//! so each pair of ranks shares exactly one full-duplex socket and nothing is
//! relayed through the head. A full mesh lets every algorithm (rings in any
//! order, chains inside a node, leader rings) pick its neighbours without a
//! second rendezvous; groups are small (learners), so the n(n-1)/2 sockets are
//! cheap. Sockets get `TCP_NODELAY` (headers must not wait for Nagle) and 4 MiB
//! kernel buffers (a whole pipeline chunk fits in flight).

use crate::error::{CollectiveError, OpKind, Result};
use crate::layout::Layout;
use crate::options::GroupOptions;
use crate::rendezvous::Rendezvous;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

const HELLO_MAGIC: u32 = u32::from_le_bytes(*b"OXHI");
const SOCKET_BUFFER_BYTES: libc::c_int = 4 * 1024 * 1024;
/// Longest node label accepted in a hello, so a stray connection cannot make
/// a rank allocate without bound.
const MAX_LABEL_BYTES: usize = 4096;

/// Bytes this rank has sent, split by whether the receiver is on its node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteCounters {
    pub intra_node: u64,
    pub inter_node: u64,
}

/// The connected sockets of one rank.
pub(crate) struct Mesh {
    rank: usize,
    layout: Layout,
    peers: Vec<Option<TcpStream>>,
    counters: ByteCounters,
}

/// The key under which `rank` of `group` publishes its address.
fn rendezvous_key(group: &str, rank: usize) -> String {
    format!("oxray/collective/{group}/rank/{rank}")
}

impl Mesh {
    /// Joins `group` as `rank` of `world_size` and connects to every other rank.
    pub(crate) fn connect(
        world_size: usize,
        rank: usize,
        group: &str,
        options: &GroupOptions,
        rendezvous: &dyn Rendezvous,
    ) -> Result<Mesh> {
        let deadline = Instant::now() + options.timeout;
        let failed = |detail: String| CollectiveError::Rendezvous {
            group: group.to_string(),
            rank,
            detail,
        };
        let own_label = match &options.layout {
            Some(layout) => layout[rank].clone(),
            None => oxray_core::node_id()
                .map_err(|error| failed(format!("cannot learn this rank's node: {error}")))?,
        };
        let listener =
            TcpListener::bind((options.advertise_host.as_str(), 0)).map_err(|error| {
                failed(format!(
                    "cannot listen on {}: {error}",
                    options.advertise_host
                ))
            })?;
        let port = listener
            .local_addr()
            .map_err(|error| failed(error.to_string()))?
            .port();
        let record = format!(
            "{world_size}\n{}:{port}\n{own_label}",
            options.advertise_host
        );
        rendezvous
            .put(&rendezvous_key(group, rank), record.into_bytes())
            .map_err(&failed)?;

        let mut peers: Vec<Option<TcpStream>> = (0..world_size).map(|_| None).collect();
        let mut labels: Vec<Option<String>> = vec![None; world_size];
        labels[rank] = Some(own_label.clone());
        let hello = encode_hello(world_size, rank, &own_label);

        for higher in rank + 1..world_size {
            let remaining = remaining_until(deadline);
            let record = rendezvous
                .wait(&rendezvous_key(group, higher), remaining)
                .map_err(&failed)?;
            let (peer_world, address, label) = parse_record(&record)
                .ok_or_else(|| failed(format!("rank {higher} published a malformed address")))?;
            if peer_world != world_size {
                return Err(failed(format!(
                    "rank {higher} joined with world size {peer_world}, this rank with {world_size}"
                )));
            }
            let stream = connect_with_deadline(&address, deadline).map_err(|error| {
                failed(format!(
                    "cannot connect to rank {higher} at {address}: {error}"
                ))
            })?;
            tune_socket(&stream).map_err(|error| failed(error.to_string()))?;
            (&stream)
                .write_all(&hello)
                .map_err(|error| failed(format!("cannot greet rank {higher}: {error}")))?;
            labels[higher] = Some(label);
            peers[higher] = Some(stream);
        }

        listener
            .set_nonblocking(true)
            .map_err(|error| failed(error.to_string()))?;
        for _ in 0..rank {
            let stream = accept_with_deadline(&listener, deadline)
                .map_err(|error| failed(format!("waiting for lower ranks to connect: {error}")))?;
            stream
                .set_nonblocking(false)
                .and_then(|()| stream.set_read_timeout(Some(remaining_until(deadline))))
                .map_err(|error| failed(error.to_string()))?;
            let (peer_world, lower, label) = read_hello(&stream).map_err(|error| {
                failed(format!("a connecting peer sent no valid greeting: {error}"))
            })?;
            if peer_world != world_size || lower >= rank {
                return Err(failed(format!(
                    "a peer claiming rank {lower} of {peer_world} connected to rank {rank} of {world_size}"
                )));
            }
            if peers[lower].is_some() {
                return Err(CollectiveError::DuplicateRank {
                    group: group.to_string(),
                    rank,
                    claimed: lower,
                });
            }
            tune_socket(&stream).map_err(|error| failed(error.to_string()))?;
            labels[lower] = Some(label);
            peers[lower] = Some(stream);
        }
        // Every rank that needed this key has connected, so it can go; a
        // later group of the same name starts from a clean slate.
        rendezvous
            .delete(&rendezvous_key(group, rank))
            .map_err(&failed)?;

        for stream in peers.iter().flatten() {
            stream
                .set_nonblocking(true)
                .map_err(|error| failed(error.to_string()))?;
        }
        let labels: Vec<String> = labels.into_iter().flatten().collect();
        let layout = match &options.layout {
            Some(given) => Layout::from_labels(given),
            None => Layout::from_labels(&labels),
        };
        Ok(Mesh {
            rank,
            layout,
            peers,
            counters: ByteCounters::default(),
        })
    }

    pub(crate) fn rank(&self) -> usize {
        self.rank
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The socket shared with `peer`. Every other rank has one once
    /// [`Mesh::connect`] succeeded.
    pub(crate) fn fd(&self, peer: usize) -> RawFd {
        self.peers[peer]
            .as_ref()
            .map(AsRawFd::as_raw_fd)
            .unwrap_or(-1)
    }

    pub(crate) fn count_sent(&mut self, peer: usize, bytes: usize) {
        let bytes = bytes as u64;
        if self.layout.same_node(self.rank, peer) {
            self.counters.intra_node += bytes;
        } else {
            self.counters.inter_node += bytes;
        }
    }

    pub(crate) fn counters(&self) -> ByteCounters {
        self.counters
    }

    pub(crate) fn reset_counters(&mut self) {
        self.counters = ByteCounters::default();
    }

    /// Closes every connection, so peers blocked on this rank fail at once
    /// instead of waiting for their timeout.
    pub(crate) fn shut_down(&mut self) {
        for stream in self.peers.iter().flatten() {
            // Already-closed sockets report an error here; nothing to do then.
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn remaining_until(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

fn parse_record(record: &[u8]) -> Option<(usize, String, String)> {
    let text = std::str::from_utf8(record).ok()?;
    let mut lines = text.splitn(3, '\n');
    let world = lines.next()?.parse().ok()?;
    let address = lines.next()?.to_string();
    let label = lines.next()?.to_string();
    Some((world, address, label))
}

fn encode_hello(world_size: usize, rank: usize, label: &str) -> Vec<u8> {
    let mut hello = Vec::with_capacity(16 + label.len());
    hello.extend_from_slice(&HELLO_MAGIC.to_le_bytes());
    hello.extend_from_slice(&(world_size as u32).to_le_bytes());
    hello.extend_from_slice(&(rank as u32).to_le_bytes());
    hello.extend_from_slice(&(label.len() as u32).to_le_bytes());
    hello.extend_from_slice(label.as_bytes());
    hello
}

fn read_hello(mut stream: &TcpStream) -> std::io::Result<(usize, usize, String)> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed)?;
    let word =
        |at: usize| u32::from_le_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]]);
    if word(0) != HELLO_MAGIC {
        return Err(invalid("not an oxray collective peer"));
    }
    let label_len = word(12) as usize;
    if label_len > MAX_LABEL_BYTES {
        return Err(invalid("node label too long"));
    }
    let mut label = vec![0u8; label_len];
    stream.read_exact(&mut label)?;
    let label = String::from_utf8(label).map_err(|_| invalid("node label is not UTF-8"))?;
    Ok((word(4) as usize, word(8) as usize, label))
}

fn connect_with_deadline(address: &str, deadline: Instant) -> std::io::Result<TcpStream> {
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

fn accept_with_deadline(listener: &TcpListener, deadline: Instant) -> std::io::Result<TcpStream> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => return Ok(stream),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                let remaining = remaining_until(deadline);
                if remaining.is_zero() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "timed out",
                    ));
                }
                wait_for_fd(listener.as_raw_fd(), libc::POLLIN, remaining)?;
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

/// Blocks until `fd` reports `events` or `timeout` passes (then returns Ok;
/// callers re-check their deadline).
fn wait_for_fd(fd: RawFd, events: libc::c_short, timeout: Duration) -> std::io::Result<()> {
    let mut poll_fd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let millis = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd, count 1.
    let ready = unsafe { libc::poll(&mut poll_fd, 1, millis) };
    if ready < 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}

fn tune_socket(stream: &TcpStream) -> std::io::Result<()> {
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
            source: error,
        },
    }
}
