//! Objects read across nodes are always the object asked for, and pulled
//! copies go away with the object: the driver's embedded head recycles freed
//! shared-memory files under the same path, so fresh values of one size land
//! in the same file again and again, and a node on its own loopback address
//! reads every one of them.

mod cluster_support;

use cluster_support::{next_node_ip, node_session, shm_files_of, start};
use oxray::core::{self as oxray_core, remote, InitOptions, SchedulingStrategy};
use std::time::{Duration, Instant};

/// FNV-1a over the bytes: a checksum the driver and the task compute alike.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[remote]
fn remote_checksum(bytes: serde_bytes::ByteBuf) -> (String, u64) {
    (oxray_core::node_id().expect("node id"), checksum(&bytes))
}

/// `len` bytes from the kernel's random source.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut bytes,
    )
    .unwrap();
    bytes
}

#[test]
fn fresh_objects_of_one_size_are_read_right_on_another_node_and_their_copies_freed() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    oxray_core::init(InitOptions::default().num_cpus(1.0)).unwrap();
    let (address, token) = oxray_core::join_address().unwrap();
    let ip = next_node_ip();
    let mut node = start(
        session,
        &[
            "--address",
            &address,
            "--token",
            &token,
            "--node-ip-address",
            &ip,
            "--num-cpus",
            "1",
        ],
    );
    let node_id = node.ready[2].clone();
    let pinned = SchedulingStrategy::NodeAffinity {
        node_id: node_id.clone(),
        soft: false,
    };
    let sent_before = oxray_core::transfer_counters().sent;
    for round in 0..50u64 {
        let bytes = random_bytes(1 << 20);
        let expected = checksum(&bytes);
        let object = oxray_core::put(&serde_bytes::ByteBuf::from(bytes)).unwrap();
        let (reader, sum) = remote_checksum::options()
            .scheduling_strategy(pinned.clone())
            .remote(&object)
            .get()
            .unwrap();
        assert_eq!(reader, node_id);
        assert_eq!(sum, expected, "round {round} read another object's bytes");
    }
    // Every round's megabyte crossed the wire; none came from a stale copy.
    let sent = oxray_core::transfer_counters().sent - sent_before;
    assert!(sent >= 50 << 20, "only {sent} bytes crossed for 50 MiB");

    // The objects are freed, and with them the node's pulled copies.
    let session_of_node = node_session(&node_id);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !shm_files_of(&session_of_node).is_empty() {
        assert!(
            Instant::now() < deadline,
            "pulled copies left: {:?}",
            shm_files_of(&session_of_node)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let head_session = node_session(&oxray_core::node_id().unwrap());
    oxray_core::shutdown();
    node.stop();
    assert!(shm_files_of(&head_session).is_empty());
    assert!(shm_files_of(&session_of_node).is_empty());
}
