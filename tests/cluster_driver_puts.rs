//! A driver joined by address: `put_acknowledged` returns only once the head's
//! store holds the value, and a value too large to send inline is refused
//! with `OutOfBounds` while the connection keeps serving.

mod cluster_support;

use cluster_support::{assert_nothing_left, node_sessions, start_head};
use oxray::core::{self as oxray_core, daemon, Error, InitOptions};

#[test]
fn a_joined_drivers_acknowledged_put_is_stored_and_an_oversized_value_is_refused() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (mut head, address, token) = start_head(session, &["--num-cpus", "1"]);
    let sessions = node_sessions(&address, &token);
    oxray_core::init(InitOptions::default().address(&address).token(&token)).unwrap();

    // Acknowledged: another connection sees the object the moment the put
    // returns.
    let stored = oxray_core::put_acknowledged(&41i64).unwrap();
    let rows = daemon::cluster_status(&address, &token)
        .unwrap()
        .object_rows;
    assert!(
        rows.iter()
            .any(|row| row.object_id == stored.id() && row.state == "READY"),
        "{:?} not among {rows:?}",
        stored.id()
    );

    let oversized = serde_bytes::ByteBuf::from(vec![0u8; 256 * 1024 * 1024]);
    match oxray_core::put(&oversized) {
        Err(error @ Error::OutOfBounds { .. }) => assert!(
            error
                .to_string()
                .contains("a value sent by a driver joined by address"),
            "{error}"
        ),
        other => panic!("an oversized inline put gave {:?}", other.map(|r| r.id())),
    }
    drop(oversized);
    assert_eq!(stored.get().unwrap(), 41, "the connection still serves");
    drop(stored);
    oxray_core::shutdown();

    head.stop();
    assert_nothing_left(session, &sessions);
}
