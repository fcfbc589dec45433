//! Unit tests of the shared-memory object files: naming, creation through
//! either sink, reuse from the pools, generation checks and cleanup.

use super::*;
use std::os::unix::fs::PermissionsExt;

/// A filler writing `len` bytes of `byte`, through either sink.
fn filled(byte: u8, len: usize) -> impl FnOnce(Sink) -> Result<()> {
    move |sink| match sink {
        Sink::Slice(bytes) => {
            assert_eq!(bytes.len(), len);
            bytes.fill(byte);
            Ok(())
        }
        Sink::Stream(out) => out
            .write_all(&vec![byte; len])
            .map_err(|e| Error::runtime("test fill", e)),
    }
}

/// Names of the session's files in shared memory, sorted.
fn files_of(session: &str) -> Vec<String> {
    let prefix = format!("oxray-{session}-");
    let mut names: Vec<String> = std::fs::read_dir(shm_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    names.sort();
    names
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn a_freed_file_is_pooled_and_reused_without_its_old_bytes() {
    let session = format!("shm-pool-test-{}", std::process::id());
    let limit = 64 << 20;
    let first = create(
        &session,
        ObjectId(10),
        300_000,
        false,
        filled(0xaa, 300_000),
    )
    .unwrap();
    let first_name = first.to_string_lossy().into_owned();
    let first_inode = inode(&first);
    assert_eq!(open(&first_name, 300_000, 10).unwrap()[299_999], 0xaa);

    free_within(&session, &first_name, limit);
    let pooled = files_of(&session);
    assert_eq!(pooled.len(), 1, "{pooled:?}");
    assert!(pooled[0].starts_with(&pool::prefix(&session)), "{pooled:?}");
    assert!(!first.exists(), "the freed path no longer names a file");
    assert!(
        !belongs_to_session(&shm_dir().join(&pooled[0]).to_string_lossy(), &session),
        "a pooled file is not an object anyone may ask for"
    );

    // A shorter value (within twice) takes the pooled file, pages and all.
    let second = create(
        &session,
        ObjectId(11),
        200_000,
        false,
        filled(0xbb, 200_000),
    )
    .unwrap();
    let second_name = second.to_string_lossy().into_owned();
    assert_eq!(inode(&second), first_inode, "the pooled file was reused");
    assert_eq!(files_of(&session).len(), 1, "the pool is empty again");
    let read = open(&second_name, 200_000, 11).unwrap();
    assert_eq!(read.len(), 200_000, "exactly the new value's bytes");
    assert!(read.iter().all(|b| *b == 0xbb), "none of the old value's");
    // A reader still holding the old value's generation is refused.
    assert!(matches!(
        open(&second_name, 300_000, 10),
        Err(Error::ObjectLost { .. })
    ));
    assert!(open(&first_name, 300_000, 10).is_err());

    // The node's own process claims pooled files too, and maps them.
    free_within(&session, &second_name, limit);
    let third = create(&session, ObjectId(12), 250_000, true, filled(0xcc, 250_000)).unwrap();
    assert_eq!(inode(&third), first_inode);
    let read = open(&third.to_string_lossy(), 250_000, 12).unwrap();
    assert!(read.iter().all(|b| *b == 0xcc));
    drop(read);

    remove_session(&session);
    assert_eq!(files_of(&session), Vec::<String>::new(), "nothing is left");
}

#[test]
fn a_pooled_file_far_too_large_is_not_taken_and_a_full_pool_removes_the_file() {
    let session = format!("shm-pool-limit-test-{}", std::process::id());
    let large = create(&session, ObjectId(20), 1 << 20, false, filled(1, 1 << 20)).unwrap();
    let large_inode = inode(&large);
    free_within(&session, &large.to_string_lossy(), 4 << 20);
    assert_eq!(files_of(&session).len(), 1);

    // 200 KB would waste more than half of the 1 MiB file.
    let small = create(&session, ObjectId(21), 200_000, false, filled(2, 200_000)).unwrap();
    assert_ne!(inode(&small), large_inode);
    assert_eq!(files_of(&session).len(), 2, "the pooled file stays pooled");

    // The pool holds 1 MiB; a limit of 1.1 MiB has no room for 200 KB more.
    free_within(&session, &small.to_string_lossy(), 1_100_000);
    let left = files_of(&session);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!small.exists(), "the freed file was removed");
    assert_eq!(inode(&shm_dir().join(&left[0])), large_inode);

    remove_session(&session);
    assert_eq!(files_of(&session), Vec::<String>::new());
}

#[test]
fn object_files_are_private_and_planted_ones_are_refused() {
    let session = format!("shm-test-{}", std::process::id());
    let path = create(&session, ObjectId(1), 4096, false, filled(7, 4096)).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    assert_eq!(open(&path.to_string_lossy(), 4096, 1).unwrap()[0], 7);

    // A file others may read, waiting at the next object's path with the
    // right generation in its header.
    let planted = object_path(&session, ObjectId(2));
    let mut forged = 2u64.to_le_bytes().to_vec();
    forged.extend_from_slice(&[9u8; 4096]);
    std::fs::write(&planted, &forged).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o644)).unwrap();
    let read = open(&planted.to_string_lossy(), 4096, 2);
    assert!(
        matches!(read, Err(Error::ObjectLost { .. })),
        "a planted value is not read"
    );
    let refused = create(&session, ObjectId(2), 4096, false, |_| Ok(()));
    assert!(
        matches!(refused, Err(Error::UnsafeLocalState { .. })),
        "{:?}",
        refused.map(|_| ())
    );
    assert_eq!(std::fs::read(&planted).unwrap(), forged, "nor written into");
    remove_session(&session);
    assert!(!path.exists() && !planted.exists());
}
