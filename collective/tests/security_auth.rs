//! Attack: a process that reaches a rank's collective port without knowing
//! the cluster's secret (a stranger on the network, a rank of another
//! cluster) tries to take a lower rank's place in the group.
//!
//! The ranks are threads meeting through an in-process rendezvous (whose
//! secret stands in for the cluster token); the attacker speaks the greeting
//! of the protocol over a raw socket.

use oxray_collective::{
    CollectiveError, CollectiveGroup, GroupOptions, InProcessRendezvous, ReduceOp, Rendezvous,
};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

const GROUP: &str = "guarded";

fn options() -> GroupOptions {
    // Two nodes by label, so the pair talks over TCP only.
    GroupOptions::default()
        .layout(["node-a", "node-b"])
        .timeout(Duration::from_secs(20))
}

/// The listener address a rank published for its peers.
fn published_address(rendezvous: &InProcessRendezvous, rank: usize) -> String {
    let record = rendezvous
        .wait(
            &format!("oxray/collective/{GROUP}/rank/{rank}"),
            Duration::from_secs(20),
        )
        .expect("the rank publishes its record");
    String::from_utf8(record)
        .expect("records are text")
        .lines()
        .nth(1)
        .expect("address line")
        .to_string()
}

/// The greeting a rank sends after connecting, with no proof after it.
fn bare_greeting(rank: u32, world: u32) -> Vec<u8> {
    let mut bytes = b"OXHI".to_vec();
    bytes.extend_from_slice(&world.to_le_bytes());
    bytes.extend_from_slice(&rank.to_le_bytes());
    for text in ["node-a", "", ""] {
        bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
        bytes.extend_from_slice(text.as_bytes());
    }
    bytes
}

#[test]
fn a_peer_without_the_secret_is_dropped_and_the_real_rank_still_joins() {
    let rendezvous = InProcessRendezvous::new();
    let higher = {
        let rendezvous = rendezvous.clone();
        std::thread::spawn(move || {
            let mut group = CollectiveGroup::join(2, 1, GROUP, options(), &rendezvous)?;
            let mut values = vec![2.0f32; 1000];
            group.allreduce(&mut values, ReduceOp::Sum)?;
            Ok::<_, CollectiveError>(values)
        })
    };

    // The attacker claims rank 0 with a well-formed greeting but no proof.
    let mut attacker = TcpStream::connect(published_address(&rendezvous, 1)).expect("connect");
    attacker
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    attacker
        .write_all(&bare_greeting(0, 2))
        .expect("send greeting");
    attacker.shutdown(Shutdown::Write).expect("half-close");
    let mut answer = Vec::new();
    let ended = attacker.read_to_end(&mut answer);
    assert!(
        ended.is_ok(),
        "the rank must close an unauthenticated connection, not keep it: {ended:?}"
    );
    assert_eq!(
        answer.len(),
        36,
        "only the challenge (4-byte tag + 32-byte nonce) may reach an unauthenticated peer"
    );
    assert_eq!(&answer[..4], b"OXCH");

    // The real rank 0 joins afterwards and the group works.
    let mut lower =
        CollectiveGroup::join(2, 0, GROUP, options(), &rendezvous).expect("rank 0 joins");
    let mut values = vec![1.0f32; 1000];
    lower
        .allreduce(&mut values, ReduceOp::Sum)
        .expect("rank 0 all-reduces");
    assert!(values.iter().all(|&v| v == 3.0));
    let higher = higher
        .join()
        .expect("rank 1 thread")
        .expect("rank 1 all-reduces");
    assert!(higher.iter().all(|&v| v == 3.0));
}

/// The same store, but a rank that holds a different cluster secret.
struct OtherCluster(InProcessRendezvous);

impl Rendezvous for OtherCluster {
    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), String> {
        self.0.put(key, value)
    }
    fn wait(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, String> {
        self.0.wait(key, timeout)
    }
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get(key)
    }
    fn delete(&self, key: &str) -> Result<(), String> {
        self.0.delete(key)
    }
    fn cluster_secret(&self) -> Result<Vec<u8>, String> {
        Ok(b"not this cluster's secret".to_vec())
    }
}

#[test]
fn ranks_with_different_secrets_refuse_each_other() {
    let rendezvous = InProcessRendezvous::new();
    let short = options().timeout(Duration::from_secs(3));
    let higher = {
        let (rendezvous, short) = (rendezvous.clone(), short.clone());
        std::thread::spawn(move || CollectiveGroup::join(2, 1, GROUP, short, &rendezvous).map(drop))
    };
    let impostor = CollectiveGroup::join(2, 0, GROUP, short, &OtherCluster(rendezvous.clone()));
    match impostor {
        Err(CollectiveError::Unauthenticated {
            rank: 0, peer: 1, ..
        }) => {}
        other => panic!(
            "a rank with the wrong secret must fail authentication, got {:?}",
            other.map(drop)
        ),
    }
    let higher = higher.join().expect("rank 1 thread");
    let message = higher
        .expect_err("rank 1 must not accept the impostor")
        .to_string();
    assert!(
        message.contains("1 unauthenticated connections refused"),
        "rank 1 times out waiting, counting the refusal: {message}"
    );
}
