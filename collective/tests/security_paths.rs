//! Attack: a peer names a file that is not its group's shared memory (any
//! file of the victim's user, another group's file) as its doorbell, hoping
//! the rank maps it read-write and scribbles its counters into it.

use oxray_collective::{
    CollectiveError, CollectiveGroup, GroupOptions, InProcessRendezvous, Rendezvous,
};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// Publishes a rank-1 record pointing at `mailbox`, on the same node as
/// rank 0, and returns rank 0's attempt to join.
fn join_against_forged_record(mailbox: &str) -> Result<CollectiveGroup, CollectiveError> {
    let rendezvous = InProcessRendezvous::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().unwrap();
    rendezvous
        .put(
            "oxray/collective/victim/rank/1",
            format!("2\n{address}\n{mailbox}\nnode-a").into_bytes(),
        )
        .unwrap();
    let options = GroupOptions::default()
        .layout(["node-a", "node-a"])
        .timeout(Duration::from_secs(5));
    CollectiveGroup::join(2, 0, "victim", options, &rendezvous)
}

fn assert_refused(outcome: Result<CollectiveGroup, CollectiveError>, path: &str) {
    match outcome {
        Err(CollectiveError::ForeignSharedFile {
            path: refused,
            rank: 0,
            peer: 1,
            ..
        }) => {
            assert_eq!(refused, path)
        }
        other => panic!(
            "{path} must be refused as a foreign file, got {:?}",
            other.map(drop)
        ),
    }
}

#[test]
fn a_private_file_of_the_user_is_never_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("precious");
    // Exactly a doorbell's size and private, as a careless check would want.
    let contents = vec![0x5a_u8; 128];
    std::fs::write(&victim, &contents).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = victim.display().to_string();
    assert_refused(join_against_forged_record(&path), &path);
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        contents,
        "the file is untouched"
    );
}

#[test]
fn another_groups_shared_memory_file_is_never_mapped() {
    let path = format!(
        "/dev/shm/oxray-collective-{}-0000000000000000-1-0-mailbox",
        std::process::id()
    );
    std::fs::write(&path, [0u8; 128]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let outcome = join_against_forged_record(&path);
    std::fs::remove_file(&path).unwrap();
    assert_refused(outcome, &path);
}
