//! Peer-to-peer connections between the ranks of a group, and the byte
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
//!
//! Two ranks on the same node (by the layout) move their data through a
//! shared-memory ring instead (see the `shm` module) when they can map the
//! same file; their socket then only tells each when the other is gone. The
//! rest of the crate sees one interface either way: [`Mesh::send_some`],
//! [`Mesh::receive_some`] and [`Mesh::wait`].
//!
//! Every connection is authenticated (the `handshake` module) before its
//! greeting is believed: a stranger that reaches a rank's port is dropped and
//! logged, and the rank goes on waiting for its real peers.

use crate::error::{CollectiveError, OpKind, Result};
use crate::greeting::{Hello, Record};
use crate::handshake::{self, GroupKey, HandshakeError};
use crate::layout::Layout;
use crate::options::GroupOptions;
use crate::rendezvous::Rendezvous;
use crate::shm::{Mailbox, OpenError, PairSegment, SharedLink};
use crate::socket::{
    accept_with_deadline, connect_with_deadline, poll_fds, remaining_until, socket_error,
    socket_receive, socket_send, tune_socket, Transfer,
};
use crate::tls_link::TlsLink;
use parking_lot::Mutex;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a rank sleeps on its doorbell before it checks that the peers it
/// waits for are still alive.
const LIVENESS_SLICE: Duration = Duration::from_millis(20);
/// How long a wait that involves both a socket and a shared-memory link
/// blocks in `poll` before it looks at the shared-memory side again.
const MIXED_WAIT_SLICE: Duration = Duration::from_micros(200);
/// How long an accepted connection may take to greet and prove itself: a
/// real peer answers the challenge at once, and a silent stranger must not
/// hold up the ranks that queue behind it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Refused connections logged per join; the rest are only counted.
const LOGGED_REFUSALS: usize = 5;

/// Bytes this rank has sent, split by whether the receiver is on its node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteCounters {
    pub intra_node: u64,
    pub inter_node: u64,
}

/// The connection to one peer: always a socket, plus a shared-memory link
/// when the two ranks share a node.
struct Link {
    stream: TcpStream,
    shared: Option<SharedLink>,
    /// The TLS session on `stream`, when the cluster runs with mutual TLS.
    /// A mutex only because [`Mesh::wait`] flushes it through `&self`; one
    /// thread drives a mesh, so it is never contended.
    tls: Option<Mutex<TlsLink>>,
}

/// The connected links of one rank.
pub(crate) struct Mesh {
    rank: usize,
    layout: Layout,
    links: Vec<Option<Link>>,
    /// This rank's doorbell, when it can use shared memory at all.
    mailbox: Option<Mailbox>,
    counters: ByteCounters,
}

/// The key under which `rank` of `group` publishes its record.
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
        let secret = rendezvous.cluster_secret().map_err(&failed)?;
        let tls = match &options.tls {
            Some(tls) => Some(tls.clone()),
            None => {
                oxray_core::tls::cluster_tls().map_err(|error| failed(format!("TLS: {error}")))?
            }
        };
        let key = GroupKey::derive(&secret, group);
        let tag = key.file_tag();
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
        // No /dev/shm (or shared memory turned off): every link uses TCP.
        let mailbox = if options.shared_memory {
            Mailbox::create(&tag).ok()
        } else {
            None
        };
        let own_record = Record {
            world_size,
            address: format!("{}:{port}", options.advertise_host),
            mailbox: mailbox.as_ref().and_then(Mailbox::path),
            label: own_label.clone(),
        };
        rendezvous
            .put(&rendezvous_key(group, rank), own_record.encode())
            .map_err(&failed)?;

        let mut links: Vec<Option<Link>> = (0..world_size).map(|_| None).collect();
        let mut labels: Vec<Option<String>> = vec![None; world_size];
        labels[rank] = Some(own_label.clone());

        for higher in rank + 1..world_size {
            let record = rendezvous
                .wait(&rendezvous_key(group, higher), remaining_until(deadline))
                .map_err(&failed)?;
            let record = Record::decode(&record)
                .ok_or_else(|| failed(format!("rank {higher} published a malformed record")))?;
            if record.world_size != world_size {
                return Err(failed(format!(
                    "rank {higher} joined with world size {}, this rank with {world_size}",
                    record.world_size
                )));
            }
            let stream = connect_with_deadline(&record.address, deadline).map_err(|error| {
                failed(format!(
                    "cannot connect to rank {higher} at {}: {error}",
                    record.address
                ))
            })?;
            tune_socket(&stream).map_err(|error| failed(error.to_string()))?;
            // The lower rank of a same-node pair creates the pair's rings; if
            // that or reaching the peer's doorbell fails, the pair uses TCP.
            // A doorbell that is not this group's own file is refused.
            let shared = match (&mailbox, &record.mailbox) {
                (Some(_), Some(peer_mailbox)) if record.label == own_label => {
                    match Mailbox::open(peer_mailbox, &tag) {
                        Ok(peer) => PairSegment::create(&tag)
                            .ok()
                            .map(|segment| SharedLink::new(segment, true, peer)),
                        Err(OpenError::Io(_)) => None,
                        Err(OpenError::Foreign(detail)) => {
                            return Err(CollectiveError::ForeignSharedFile {
                                group: group.to_string(),
                                rank,
                                peer: higher,
                                path: peer_mailbox.display().to_string(),
                                detail,
                            })
                        }
                    }
                }
                _ => None,
            };
            let segment_path = shared.as_ref().and_then(|link| link.segment().path());
            let hello = Hello {
                world_size,
                rank,
                label: own_label.clone(),
                segment: segment_path,
                mailbox: own_record.mailbox.clone(),
            };
            stream
                .set_read_timeout(Some(
                    remaining_until(deadline).max(Duration::from_millis(1)),
                ))
                .map_err(|error| failed(error.to_string()))?;
            handshake::prove_and_verify(&stream, &key, &hello.encode()).map_err(
                |error| match error {
                    HandshakeError::Io(error) => {
                        failed(format!("cannot authenticate with rank {higher}: {error}"))
                    }
                    other => CollectiveError::Unauthenticated {
                        group: group.to_string(),
                        rank,
                        peer: higher,
                        detail: other.to_string(),
                    },
                },
            )?;
            let tls_link = match &tls {
                Some(tls) => Some(TlsLink::handshake(&stream, tls, true).map_err(|error| {
                    CollectiveError::Unauthenticated {
                        group: group.to_string(),
                        rank,
                        peer: higher,
                        detail: format!("TLS handshake failed: {error}"),
                    }
                })?),
                None => None,
            };
            labels[higher] = Some(record.label);
            links[higher] = Some(Link {
                stream,
                shared,
                tls: tls_link.map(Mutex::new),
            });
        }

        listener
            .set_nonblocking(true)
            .map_err(|error| failed(error.to_string()))?;
        let mut accepted = 0;
        let mut refused = 0;
        while accepted < rank {
            let (stream, from) = accept_with_deadline(&listener, deadline).map_err(|error| {
                let strangers = if refused > 0 {
                    format!(" ({refused} unauthenticated connections refused)")
                } else {
                    String::new()
                };
                failed(format!(
                    "waiting for lower ranks to connect: {error}{strangers}"
                ))
            })?;
            stream
                .set_nonblocking(false)
                .and_then(|()| {
                    let limit = remaining_until(deadline).min(HANDSHAKE_TIMEOUT);
                    stream.set_read_timeout(Some(limit.max(Duration::from_millis(1))))
                })
                .map_err(|error| failed(error.to_string()))?;
            let authenticated = authenticate_lower(&stream, &key)
                .map_err(|error| error.to_string())
                .and_then(|hello| match &tls {
                    Some(tls) => TlsLink::handshake(&stream, tls, false)
                        .map(|link| (hello, Some(link)))
                        .map_err(|error| format!("TLS handshake failed: {error}")),
                    None => Ok((hello, None)),
                });
            let (hello, tls_link) = match authenticated {
                Ok(authenticated) => authenticated,
                Err(error) => {
                    refused += 1;
                    if refused <= LOGGED_REFUSALS {
                        eprintln!(
                            "oxray: rank {rank} of collective group {group:?} refused a connection from {from}: {error}"
                        );
                    }
                    continue;
                }
            };
            accepted += 1;
            let lower = hello.rank;
            if hello.world_size != world_size || lower >= rank {
                return Err(failed(format!(
                    "a peer claiming rank {lower} of {} connected to rank {rank} of {world_size}",
                    hello.world_size
                )));
            }
            if links[lower].is_some() {
                return Err(CollectiveError::DuplicateRank {
                    group: group.to_string(),
                    rank,
                    claimed: lower,
                });
            }
            tune_socket(&stream).map_err(|error| failed(error.to_string()))?;
            let shared = match (&hello.segment, &hello.mailbox) {
                (Some(segment), Some(peer_mailbox)) => Some(
                    attach_shared(segment, peer_mailbox, &tag).map_err(
                        |(path, error)| match error {
                            OpenError::Foreign(detail) => CollectiveError::ForeignSharedFile {
                                group: group.to_string(),
                                rank,
                                peer: lower,
                                path: path.display().to_string(),
                                detail,
                            },
                            OpenError::Io(error) => failed(format!(
                                "rank {lower} is on this node but its shared memory is not: {error}"
                            )),
                        },
                    )?,
                ),
                _ => None,
            };
            labels[lower] = Some(hello.label);
            links[lower] = Some(Link {
                stream,
                shared,
                tls: tls_link.map(Mutex::new),
            });
        }
        // Every lower rank has connected, so none needs this key any more; a
        // later group of the same name starts from a clean slate.
        rendezvous
            .delete(&rendezvous_key(group, rank))
            .map_err(&failed)?;

        for link in links.iter().flatten() {
            link.stream
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
            links,
            mailbox,
            counters: ByteCounters::default(),
        })
    }

    pub(crate) fn rank(&self) -> usize {
        self.rank
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    fn link(&self, peer: usize) -> std::io::Result<&Link> {
        self.links[peer]
            .as_ref()
            .ok_or_else(|| std::io::ErrorKind::NotConnected.into())
    }

    fn count_sent(&mut self, peer: usize, bytes: usize) {
        let bytes = bytes as u64;
        if self.layout.same_node(self.rank, peer) {
            self.counters.intra_node += bytes;
        } else {
            self.counters.inter_node += bytes;
        }
    }

    /// Hands as much of `bytes` to `peer` as its link takes without waiting.
    pub(crate) fn send_some(&mut self, peer: usize, bytes: &[u8]) -> std::io::Result<Transfer> {
        let link = self.link(peer)?;
        let sent = match (&link.shared, &link.tls) {
            (Some(shared), _) => shared.send(bytes)?,
            (None, Some(tls)) => match tls.lock().send(&link.stream, bytes)? {
                Transfer::Moved(count) => count,
                Transfer::WouldBlock => 0,
            },
            (None, None) => match socket_send(link.stream.as_raw_fd(), bytes)? {
                Transfer::Moved(count) => count,
                Transfer::WouldBlock => 0,
            },
        };
        if sent == 0 {
            return Ok(Transfer::WouldBlock);
        }
        self.count_sent(peer, sent);
        Ok(Transfer::Moved(sent))
    }

    /// Takes what `peer` has sent, up to `bytes.len()`, without waiting.
    pub(crate) fn receive_some(
        &mut self,
        peer: usize,
        bytes: &mut [u8],
    ) -> std::io::Result<Transfer> {
        let link = self.link(peer)?;
        match &link.shared {
            Some(shared) => Ok(match shared.receive(bytes)? {
                0 => Transfer::WouldBlock,
                count => Transfer::Moved(count),
            }),
            None => match &link.tls {
                Some(tls) => tls.lock().receive(&link.stream, bytes),
                None => socket_receive(link.stream.as_raw_fd(), bytes),
            },
        }
    }

    /// Lets `consume` read up to `limit` received bytes where they lie, when
    /// `peer` is a shared-memory peer (`None` for a socket); `consume`
    /// returns how many it used, and only those are taken off the ring.
    pub(crate) fn receive_in_place(
        &mut self,
        peer: usize,
        limit: usize,
        consume: impl FnOnce(&[u8]) -> usize,
    ) -> std::io::Result<Option<Transfer>> {
        let Some(shared) = &self.link(peer)?.shared else {
            return Ok(None);
        };
        Ok(Some(match shared.receive_in_place(limit, consume)? {
            None => Transfer::WouldBlock,
            Some(used) => Transfer::Moved(used),
        }))
    }

    /// The doorbell count before a round of transfers; [`Mesh::wait`] returns
    /// at once if a shared-memory peer rang since.
    pub(crate) fn observe(&self) -> u32 {
        self.mailbox.as_ref().map_or(0, Mailbox::observe)
    }

    /// Blocks until the link to `send_to` can take more, the link from
    /// `receive_from` has more, or a slice of time passes; fails when the
    /// deadline has passed or a peer is gone.
    pub(crate) fn wait(
        &self,
        send_to: Option<usize>,
        receive_from: Option<usize>,
        observed: u32,
        op: OpKind,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<()> {
        // The peer this rank is stuck on, for a timeout: the one it waits to
        // hear from, else the one that does not take its data.
        let waiting_on = receive_from.or(send_to).unwrap_or(self.rank);
        let remaining = remaining_until(deadline);
        if remaining.is_zero() {
            return Err(CollectiveError::Timeout {
                rank: self.rank,
                peer: waiting_on,
                op,
                timeout,
            });
        }
        let broken = |peer: usize| move |error| socket_error(self.rank, peer, op, error);
        let mut socket_waits: Vec<libc::pollfd> = Vec::with_capacity(2);
        // Records still buffered in a TLS session go out now, whichever
        // peer this round waits on: the peer may be waiting for them.
        for (peer, link) in self.links.iter().enumerate() {
            let Some(Link {
                stream,
                tls: Some(tls),
                shared: None,
            }) = link
            else {
                continue;
            };
            if !tls.lock().flush(stream).map_err(broken(peer))? {
                socket_waits.push(libc::pollfd {
                    fd: stream.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                });
            }
        }
        let mut shared_peers: Vec<usize> = Vec::with_capacity(2);
        for (peer, events) in [(send_to, libc::POLLOUT), (receive_from, libc::POLLIN)] {
            let Some(peer) = peer else { continue };
            let link = self.link(peer).map_err(broken(peer))?;
            if link.shared.is_some() {
                shared_peers.push(peer);
                continue;
            }
            let fd = link.stream.as_raw_fd();
            match socket_waits.iter_mut().find(|entry| entry.fd == fd) {
                Some(entry) => entry.events |= events,
                None => socket_waits.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                }),
            }
        }
        if socket_waits.is_empty() {
            if let Some(mailbox) = &self.mailbox {
                mailbox.sleep(observed, remaining.min(LIVENESS_SLICE));
                if mailbox.observe() != observed {
                    return Ok(());
                }
            }
            return self.check_alive(&shared_peers, op);
        }
        if shared_peers.is_empty() {
            return poll_fds(&mut socket_waits, remaining).map_err(broken(waiting_on));
        }
        // Waiting on a socket and a ring at once: poll the socket in short
        // slices so the ring is looked at again soon.
        poll_fds(&mut socket_waits, remaining.min(MIXED_WAIT_SLICE)).map_err(broken(waiting_on))?;
        self.check_alive(&shared_peers, op)
    }

    /// Fails if any of `peers`, which use shared memory and so send no data
    /// on their sockets, has closed its socket: its process is gone. A TLS
    /// peer's socket may still carry records that are not data (the session
    /// tickets a TLS 1.3 server sends after the handshake, whenever they
    /// arrive); its session takes them in, and only the end of the stream
    /// counts as gone.
    fn check_alive(&self, peers: &[usize], op: OpKind) -> Result<()> {
        for &peer in peers {
            let broken = |error| socket_error(self.rank, peer, op, error);
            let link = self.link(peer).map_err(broken)?;
            let mut entry = [libc::pollfd {
                fd: link.stream.as_raw_fd(),
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            }];
            poll_fds(&mut entry, Duration::ZERO).map_err(broken)?;
            let revents = entry[0].revents;
            if revents == 0 {
                continue;
            }
            let closed = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR;
            if let (Some(tls), 0) = (&link.tls, revents & closed) {
                if tls
                    .lock()
                    .take_control_records(&link.stream)
                    .map_err(broken)?
                {
                    continue;
                }
                return Err(CollectiveError::ProtocolMismatch {
                    rank: self.rank,
                    peer,
                    op,
                    detail: "it sent data on the socket of a shared-memory link".into(),
                });
            }
            return Err(CollectiveError::PeerDisconnected {
                rank: self.rank,
                peer,
                op,
            });
        }
        Ok(())
    }

    pub(crate) fn counters(&self) -> ByteCounters {
        self.counters
    }

    pub(crate) fn reset_counters(&mut self) {
        self.counters = ByteCounters::default();
    }

    /// Removes the shared-memory files this rank created; call once every
    /// rank has joined, so every peer has mapped them.
    pub(crate) fn remove_shared_files(&self) {
        if let Some(mailbox) = &self.mailbox {
            mailbox.remove_file();
        }
        for link in self.links.iter().flatten() {
            if let Some(shared) = &link.shared {
                shared.segment().remove_file();
            }
        }
    }

    /// Closes every link, so peers blocked on this rank fail at once instead
    /// of waiting for their timeout.
    /// Writes out every record a TLS session still buffers, before an
    /// operation returns; nothing without TLS.
    pub(crate) fn flush(&self, op: OpKind, deadline: Instant) -> Result<()> {
        for (peer, link) in self.links.iter().enumerate() {
            if let Some(Link {
                stream,
                tls: Some(tls),
                ..
            }) = link
            {
                let mut tls = tls.lock();
                if tls.pending() {
                    tls.flush_blocking(stream, deadline)
                        .map_err(|error| socket_error(self.rank, peer, op, error))?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn shut_down(&mut self) {
        for link in self.links.iter().flatten() {
            if let Some(shared) = &link.shared {
                shared.close();
            }
            // Already-closed sockets report an error here; nothing to do then.
            let _ = link.stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // A peer reading a ring does not look at the socket until it has
        // waited a while; marking the rings closed tells it at once.
        for link in self.links.iter().flatten() {
            if let Some(shared) = &link.shared {
                shared.close();
            }
        }
    }
}

/// Maps the rings and doorbell a lower rank named; on failure, the path at
/// fault and why.
fn attach_shared(
    segment: &Path,
    peer_mailbox: &Path,
    tag: &str,
) -> Result<SharedLink, (PathBuf, OpenError)> {
    let rings = PairSegment::open(segment, tag).map_err(|error| (segment.to_path_buf(), error))?;
    let doorbell =
        Mailbox::open(peer_mailbox, tag).map_err(|error| (peer_mailbox.to_path_buf(), error))?;
    Ok(SharedLink::new(rings, false, doorbell))
}

/// Challenges a connecting peer, reads its greeting and checks its proof.
fn authenticate_lower(stream: &TcpStream, key: &GroupKey) -> Result<Hello, HandshakeError> {
    let challenge = handshake::send_challenge(stream)?;
    let hello = Hello::read(stream)?;
    handshake::verify_and_answer(stream, key, &challenge, &hello.encode())?;
    Ok(hello)
}
