//! Object spilling: a cluster whose nodes' object stores are capped at
//! 64 MiB holds a gibibyte of puts by spilling the oldest objects to the
//! session directory, and every `get` returns the right bytes — from the
//! driver, pulled from the head node that spilled them, and from another
//! node (its own loopback address) whose pulled copies stay within its own
//! 64 MiB. Shared memory never holds more than the cap (plus the one object
//! being put, which the head spills room for once it is sealed). A put
//! larger than a whole store is a typed error. Nothing is left behind: a
//! freed object takes its spill file with it, and `oxray stop` removes the
//! spill files and shared memory of a head that was SIGKILLed.

mod cluster_support;

use cluster_support::{
    node_session, oxray, shm_files_of, start_head, start_node, wait_for_exit, HEAD_IP,
};
use oxray::core::{self as oxray_core, remote, InitOptions, ObjectRef, SchedulingStrategy};
use serde_bytes::ByteBuf;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CAPACITY: u64 = 64 << 20;
const OBJECT_BYTES: usize = 16 << 20;
/// 64 objects of 16 MiB: a gibibyte.
const OBJECTS: u64 = 64;
const PUT_TASKS: u64 = 4;

/// A checksum the driver and the tasks compute alike, over 8-byte words.
fn checksum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let mut hash = bytes.len() as u64;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        hash = (hash ^ word)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(23);
    }
    for b in words.remainder() {
        hash = (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// `len` pseudo-random bytes of stream `seed` (xorshift: fast enough to
/// make a gigabyte in about a second).
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

#[remote]
fn remote_checksum(bytes: ByteBuf) -> u64 {
    checksum(&bytes)
}

/// Puts `count` distinct random objects of 16 MiB, streams `first..`, on the
/// node this runs on; returns each with its checksum.
#[remote]
fn put_objects(first: u64, count: u64) -> Vec<(ObjectRef<ByteBuf>, u64)> {
    (first..first + count)
        .map(|seed| {
            let bytes = random_bytes(seed, OBJECT_BYTES);
            let sum = checksum(&bytes);
            (oxray_core::put(&ByteBuf::from(bytes)).expect("put"), sum)
        })
        .collect()
}

/// What a put of `bytes` bytes says on the node this runs on.
#[remote]
fn put_too_large(bytes: u64) -> String {
    match oxray_core::put(&ByteBuf::from(vec![7u8; bytes as usize])) {
        Err(e @ oxray_core::Error::ObjectStoreFull { .. }) => e.to_string(),
        other => format!("not refused: {:?}", other.map(|_| ())),
    }
}

/// Spill files of a node's session in `dir`.
fn spill_files(dir: &Path, session: &str) -> Vec<String> {
    let prefix = format!("oxray-{session}-");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes of a node's session files in /dev/shm.
fn shm_bytes(session: &str) -> u64 {
    shm_files_of(session)
        .iter()
        .filter_map(|name| std::fs::metadata(Path::new("/dev/shm").join(name)).ok())
        .map(|m| m.len())
        .sum()
}

/// Samples each session's bytes in /dev/shm until dropped; keeps the most
/// seen per session.
struct ShmWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<HashMap<String, u64>>>,
}

impl ShmWatch {
    fn start(sessions: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut most = HashMap::new();
            while !stopping.load(Ordering::Relaxed) {
                for session in &sessions {
                    let bytes = shm_bytes(session);
                    let seen = most.entry(session.clone()).or_insert(0);
                    *seen = bytes.max(*seen);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        });
        ShmWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn most(mut self) -> HashMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn node_status(address: &str, token: &str, node_id: &str) -> oxray_core::NodeStatus {
    oxray_core::daemon::cluster_status(address, token)
        .unwrap()
        .nodes
        .into_iter()
        .find(|n| n.node_id == node_id)
        .expect("the node is listed")
}

fn pinned(node_id: &str) -> SchedulingStrategy {
    SchedulingStrategy::NodeAffinity {
        node_id: node_id.to_string(),
        soft: false,
    }
}

#[test]
fn a_64_mib_store_holds_a_gibibyte_by_spilling_and_every_get_is_right() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path();
    let capacity = CAPACITY.to_string();
    let store = ["--num-cpus", "1", "--object-store-memory", &capacity];
    let (mut head, address, token) = start_head(session, &store);
    let (mut node, node_id) = start_node(session, &address, &token, &store);
    assert!(address.starts_with(HEAD_IP), "{address}");
    let head_id = oxray_core::daemon::cluster_status(&address, &token)
        .unwrap()
        .nodes
        .into_iter()
        .find(|n| n.is_head)
        .expect("a head node")
        .node_id;
    let sessions = [node_session(&head_id), node_session(&node_id)];
    let spill_dir = session.join("spill");
    oxray_core::init(InitOptions::default().address(&address).token(&token)).unwrap();
    let watch = ShmWatch::start(sessions.to_vec());

    // A gibibyte of distinct random objects put on the head node.
    let per_task = OBJECTS / PUT_TASKS;
    let puts: Vec<_> = (0..PUT_TASKS)
        .map(|task| {
            put_objects::options()
                .scheduling_strategy(pinned(&head_id))
                .remote(task * per_task, per_task)
        })
        .collect();
    let objects: Vec<(ObjectRef<ByteBuf>, u64)> =
        puts.into_iter().flat_map(|p| p.get().unwrap()).collect();
    let put_seconds = started.elapsed().as_secs_f64();
    assert_eq!(objects.len() as u64, OBJECTS);
    let head_store = node_status(&address, &token, &head_id);
    assert_eq!(head_store.object_store_capacity_bytes, CAPACITY);
    assert!(head_store.object_store_bytes <= CAPACITY, "{head_store:?}");
    // Each object is its bytes and a few of encoding.
    let put_bytes = OBJECTS * OBJECT_BYTES as u64;
    let stored = head_store.object_store_bytes + head_store.spilled_bytes;
    assert!(
        (put_bytes..put_bytes + 8 * OBJECTS).contains(&stored),
        "{stored} bytes stored for {put_bytes} put"
    );
    assert!(
        head_store.spilled_bytes >= put_bytes - CAPACITY,
        "{head_store:?}"
    );
    let spilled = spill_files(&spill_dir, &sessions[0]);
    assert_eq!(spilled.len() as u64, head_store.spilled_objects_total);
    // `oxray status` shows the head's store and what it spilled.
    let status = oxray(session).arg("status").output().unwrap();
    let shown = String::from_utf8_lossy(&status.stdout);
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20));
    let expected = format!(
        "object store {} of 64.0 MiB, {} spilled ({} objects, {} since joining)",
        mib(head_store.object_store_bytes),
        mib(head_store.spilled_bytes),
        head_store.spilled_objects_total,
        mib(head_store.spilled_bytes_total)
    );
    assert!(
        status.status.success() && shown.contains(&expected),
        "{expected} not in {shown}"
    );
    for name in &spilled {
        let mode = std::fs::metadata(spill_dir.join(name))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    // The driver reads every one back right, spilled or not (pulled from
    // the head node, which serves spilled ones from disk).
    let get_started = Instant::now();
    for (index, (object, sum)) in objects.iter().enumerate() {
        let bytes = object.get().unwrap();
        assert_eq!(checksum(&bytes), *sum, "object {index} read back wrong");
    }
    let get_seconds = get_started.elapsed().as_secs_f64();

    // The other node reads every one right too: its pulled copies share its
    // 64 MiB with its own objects, the oldest making room for the next.
    let reads: Vec<_> = objects
        .iter()
        .map(|(object, _)| {
            remote_checksum::options()
                .scheduling_strategy(pinned(&node_id))
                .remote(object)
        })
        .collect();
    for (index, (read, (_, sum))) in reads.iter().zip(&objects).enumerate() {
        assert_eq!(
            read.get().unwrap(),
            *sum,
            "object {index} wrong on the other node"
        );
    }

    // The other node spills what its tasks put past its own 64 MiB, and the
    // driver reads every one of those back right.
    let from_node = put_objects::options()
        .scheduling_strategy(pinned(&node_id))
        .remote(1000, 8)
        .get()
        .unwrap();
    for (index, (object, sum)) in from_node.iter().enumerate() {
        let bytes = object.get().unwrap();
        assert_eq!(
            checksum(&bytes),
            *sum,
            "node object {index} read back wrong"
        );
    }
    let node_store = node_status(&address, &token, &node_id);
    assert!(
        node_store.spilled_bytes >= 8 * OBJECT_BYTES as u64 - CAPACITY,
        "{node_store:?}"
    );
    assert!(!spill_files(&spill_dir, &sessions[1]).is_empty());

    // A put larger than a whole store is refused with a typed error.
    let refused = put_too_large::options()
        .scheduling_strategy(pinned(&node_id))
        .remote(CAPACITY + 1)
        .get()
        .unwrap();
    assert!(refused.contains("does not fit"), "{refused}");

    // Freed objects take their spill files and shared memory with them (the
    // node keeps only its pulled copies of the head's objects, still held).
    drop(from_node);
    let own_files = || -> Vec<String> {
        shm_files_of(&sessions[1])
            .into_iter()
            .filter(|name| !name.contains("-pulled-"))
            .chain(spill_files(&spill_dir, &sessions[1]))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !own_files().is_empty() {
        assert!(
            Instant::now() < deadline,
            "left on the node after free: {:?}",
            own_files()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let most = watch.most();
    for session in &sessions {
        // The cap, plus the one object being put before the head has its
        // node spill room for it: a put is answered only once the node has
        // done the spills it caused, so no second one piles up behind it.
        let bound = CAPACITY + OBJECT_BYTES as u64 + 64;
        assert!(
            most[session] <= bound,
            "{} bytes in /dev/shm for a {CAPACITY}-byte store ({session} of {sessions:?})",
            most[session]
        );
    }

    // The head dies holding spilled objects; `oxray stop` removes what it
    // left, spill files and shared memory, and stops the other node.
    assert!(!spill_files(&spill_dir, &sessions[0]).is_empty());
    head.child.kill().unwrap();
    head.child.wait().unwrap();
    let stopped = oxray(session).arg("stop").output().unwrap();
    assert!(stopped.status.success(), "{stopped:?}");
    node.stop();
    drop(objects);
    oxray_core::shutdown();
    for session in &sessions {
        assert!(
            spill_files(&spill_dir, session).is_empty(),
            "{session} left spill files"
        );
        assert!(
            shm_files_of(session).is_empty(),
            "{session} left /dev/shm files"
        );
    }
    wait_for_exit(session, &sessions);
    eprintln!(
        "spilling: {} MiB put (and spilled past 64 MiB) in {put_seconds:.1} s, read back by the driver in {get_seconds:.1} s ({:.0} MiB/s), test {:.1} s; most in /dev/shm: {most:?}",
        put_bytes >> 20,
        (put_bytes >> 20) as f64 / get_seconds,
        started.elapsed().as_secs_f64()
    );
}
