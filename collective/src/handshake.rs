//! Peer authentication: how two ranks prove to each other that they belong to
//! the same cluster and the same group before any data or file path crosses
//! their socket.
//!
//! The group's key is derived from the cluster secret (the token, through
//! [`oxray_core::cluster_key`], or an in-process secret) and the group name,
//! so a rank of another group, another cluster, or a stranger who found the
//! port cannot join. The exchange is a mutual challenge-response with
//! HMAC-SHA256 and fresh 256-bit nonces; nothing secret is ever sent:
//!
//! 1. the accepting (higher) rank sends `OXCH` and its challenge `A`;
//! 2. the connecting rank sends its greeting, its nonce `C`, and
//!    `HMAC(key, "connect" | A | C | greeting)`;
//! 3. the accepting rank checks that and answers
//!    `HMAC(key, "accept" | A | C | greeting)`, which the connecting rank
//!    checks in turn.
//!
//! Both nonces go into both proofs, so neither side can replay an old
//! exchange, and the greeting (rank, world size, shared-memory paths) is
//! covered, so it cannot be altered on the way. A peer that fails is dropped
//! without an answer.

use oxray_core::auth::{constant_time_eq, hmac_sha256, random_bytes};
use std::io::{Read, Write};
use std::net::TcpStream;

const CHALLENGE_MAGIC: [u8; 4] = *b"OXCH";
const NONCE_BYTES: usize = 32;
pub(crate) const PROOF_BYTES: usize = NONCE_BYTES + 32;

pub(crate) type Nonce = [u8; NONCE_BYTES];

/// The key every rank of one group of one cluster shares.
#[derive(Clone)]
pub(crate) struct GroupKey([u8; 32]);

impl GroupKey {
    pub(crate) fn derive(cluster_secret: &[u8], group: &str) -> GroupKey {
        GroupKey(hmac_sha256(
            cluster_secret,
            &[b"oxray collective group\0", group.as_bytes()],
        ))
    }

    /// A name component for the group's shared-memory files: the receiver
    /// of a path checks it, so only files of this group and cluster are
    /// ever mapped. One-way, so it reveals nothing about the key.
    pub(crate) fn file_tag(&self) -> String {
        hmac_sha256(&self.0, &[b"shared-memory file tag"])[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    fn mac(&self, role: &[u8], challenge: &Nonce, nonce: &Nonce, greeting: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.0, &[role, challenge, nonce, greeting])
    }
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("the peer's proof of the cluster token and group is wrong")]
    WrongProof,
    #[error("not an oxray collective peer (no challenge)")]
    NotAPeer,
    #[error("the peer closed the connection during authentication (it does not share this cluster's token and group)")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cannot draw a nonce: {0}")]
    Random(oxray_core::Error),
}

fn read_array<const N: usize>(mut stream: &TcpStream) -> Result<[u8; N], HandshakeError> {
    let mut bytes = [0u8; N];
    stream.read_exact(&mut bytes).map_err(|error| {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            HandshakeError::Closed
        } else {
            HandshakeError::Io(error)
        }
    })?;
    Ok(bytes)
}

/// Accepting side, step 1: sends a fresh challenge.
pub(crate) fn send_challenge(mut stream: &TcpStream) -> Result<Nonce, HandshakeError> {
    let challenge: Nonce = random_bytes().map_err(HandshakeError::Random)?;
    let mut message = CHALLENGE_MAGIC.to_vec();
    message.extend_from_slice(&challenge);
    stream.write_all(&message)?;
    Ok(challenge)
}

/// Connecting side, steps 2 and 3: reads the challenge, sends `greeting`
/// with its proof, and checks the accepting rank's proof.
pub(crate) fn prove_and_verify(
    mut stream: &TcpStream,
    key: &GroupKey,
    greeting: &[u8],
) -> Result<(), HandshakeError> {
    let magic: [u8; 4] = read_array(stream)?;
    if magic != CHALLENGE_MAGIC {
        return Err(HandshakeError::NotAPeer);
    }
    let challenge: Nonce = read_array(stream)?;
    let nonce: Nonce = random_bytes().map_err(HandshakeError::Random)?;
    let mut message = greeting.to_vec();
    message.extend_from_slice(&nonce);
    message.extend_from_slice(&key.mac(b"connect", &challenge, &nonce, greeting));
    stream.write_all(&message)?;
    let answer: [u8; 32] = read_array(stream)?;
    if constant_time_eq(&answer, &key.mac(b"accept", &challenge, &nonce, greeting)) {
        Ok(())
    } else {
        Err(HandshakeError::WrongProof)
    }
}

/// Accepting side, step 3: checks the proof that followed `greeting` and
/// answers with its own.
pub(crate) fn verify_and_answer(
    mut stream: &TcpStream,
    key: &GroupKey,
    challenge: &Nonce,
    greeting: &[u8],
) -> Result<(), HandshakeError> {
    let proof: [u8; PROOF_BYTES] = read_array(stream)?;
    let (nonce, mac) = proof.split_at(NONCE_BYTES);
    let nonce: Nonce = nonce.try_into().expect("split at the nonce length");
    if !constant_time_eq(mac, &key.mac(b"connect", challenge, &nonce, greeting)) {
        return Err(HandshakeError::WrongProof);
    }
    stream.write_all(&key.mac(b"accept", challenge, &nonce, greeting))?;
    Ok(())
}
