//! Handles made by decoding a value are counted together when the decode
//! ends; a decode that fails part way must release only what it counted,
//! after counting it. Its own test binary: it compares the node's object
//! count before and after, which tests running beside it would change.

use oxray_core::{remote, Error, InitOptions, ObjectRef};
use std::sync::atomic::{AtomicBool, Ordering};

/// While set, a [`RefsThenCheck`] refuses to decode in this process.
static REFUSE: AtomicBool = AtomicBool::new(false);

/// Refs, then a field that refuses to decode while [`REFUSE`] is set: a
/// value whose decode fails after the handles to its refs were made.
#[derive(serde::Serialize, serde::Deserialize)]
struct RefsThenCheck {
    refs: Vec<ObjectRef<u64>>,
    #[serde(deserialize_with = "unless_refused")]
    check: u64,
}

fn unless_refused<'de, D: serde::Deserializer<'de>>(decoder: D) -> Result<u64, D::Error> {
    let number = <u64 as serde::Deserialize>::deserialize(decoder)?;
    if REFUSE.load(Ordering::SeqCst) {
        return Err(serde::de::Error::custom("refused"));
    }
    Ok(number)
}

/// Fails to decode `value` (which drops the handles that decode made),
/// then decodes it and reads what its refs point to.
fn fail_then_read(value: &ObjectRef<RefsThenCheck>) -> u64 {
    REFUSE.store(true, Ordering::SeqCst);
    match value.get() {
        Err(Error::Decode { .. }) => {}
        other => panic!("expected a decode error, got {:?}", other.map(|_| ())),
    }
    REFUSE.store(false, Ordering::SeqCst);
    let decoded = value.get().expect("decodes when not refused");
    oxray_core::get_all(&decoded.refs)
        .expect("the value's refs outlive a failed decode of it")
        .iter()
        .sum()
}

#[remote]
fn fail_then_read_in_a_worker(value: Vec<ObjectRef<RefsThenCheck>>) -> u64 {
    fail_then_read(&value[0])
}

#[test]
fn a_decode_that_fails_part_way_releases_exactly_what_it_counted() {
    oxray_core::init(InitOptions::default().num_cpus(1.0)).unwrap();
    let objects_before = oxray_core::node_summary().unwrap().objects;
    let inner = oxray_core::put(&7u64).unwrap();
    let value = oxray_core::put(&RefsThenCheck {
        refs: vec![inner.clone(), inner.clone(), inner],
        check: 1,
    })
    .unwrap();
    // From here only the value holds `inner`: three references. Released
    // before they were counted, the failed decode's three handles would
    // free it.

    // Here, where the driver hosts the node and counts every handle there.
    assert_eq!(fail_then_read(&value), 21);
    // In a worker, which counts its handles itself and tells the head of
    // the first and the last.
    let read = fail_then_read_in_a_worker::remote(vec![value.clone()]);
    assert_eq!(read.get().unwrap(), 21);

    // Nothing kept: the worker's releases reached the head before its
    // result did.
    drop((read, value));
    assert_eq!(oxray_core::node_summary().unwrap().objects, objects_before);
    oxray_core::shutdown();
}
