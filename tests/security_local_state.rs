//! Attacks by another user of the same machine on oxray's local state: a
//! session directory planted before the head starts (so a driver would trust
//! its address or token), files left readable to others, a token on display.

mod cluster_support;

use cluster_support::{oxray, start_head, status};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// `oxray start --head` with `session` as its session directory: (success, stderr).
fn start_head_in(session: &Path) -> (bool, String) {
    let output = oxray(session)
        .args([
            "start",
            "--head",
            "--port",
            "0",
            "--num-cpus",
            "1",
            "--block",
        ])
        .output()
        .expect("oxray runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_planted_session_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    // Writable by everyone: anyone could have put a head address in it.
    let open = root.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(open.join("head_address"), "203.0.113.9:6379").unwrap();
    // A link to somewhere else.
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&open, &link).unwrap();
    for (planted, why) in [(&open, "mode 777"), (&link, "symbolic link")] {
        let (ok, stderr) = start_head_in(planted);
        assert!(!ok, "a head must not start in {}", planted.display());
        assert!(
            stderr.contains("refusing") && stderr.contains(why),
            "{}: {stderr}",
            planted.display()
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        let listing = oxray(planted).args(["status"]).output().unwrap();
        let text = String::from_utf8_lossy(&listing.stderr);
        assert!(
            !listing.status.success() && text.contains("refusing"),
            "status must not trust a planted directory: {text}"
        );
    }
    assert!(!open.join("token").exists(), "nothing was written into it");
}

#[test]
fn session_files_are_private_and_the_token_is_never_printed() {
    let session = tempfile::tempdir().unwrap();
    let (head, address, token) = start_head(session.path(), &["--num-cpus", "1"]);
    assert!(
        !head.ready.iter().any(|word| word.contains(&token)),
        "the ready line must not show the token: {:?}",
        head.ready
    );
    assert_eq!(mode(session.path()), 0o700);
    for file in ["token", "head_address"] {
        assert_eq!(mode(&session.path().join(file)), 0o600, "{file}");
    }
    let pids = session.path().join("pids");
    assert_eq!(mode(&pids), 0o700);
    for entry in std::fs::read_dir(&pids).unwrap() {
        assert_eq!(mode(&entry.unwrap().path()), 0o600);
    }

    // The token from a private file works; from a file others can read it
    // is refused, as ssh refuses such a key.
    let token_file = session.path().join("copy-of-token");
    std::fs::write(&token_file, &token).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file_arg = token_file.display().to_string();
    let private = oxray(session.path())
        .args(["status", "--address", &address, "--token-file", &file_arg])
        .output()
        .unwrap();
    assert!(
        private.status.success(),
        "{}",
        String::from_utf8_lossy(&private.stderr)
    );
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let shared = oxray(session.path())
        .args(["status", "--address", &address, "--token-file", &file_arg])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shared.stderr);
    assert!(
        !shared.status.success() && text.contains("mode 644"),
        "a token file others can read is refused: {text}"
    );
    let (ok, shown) = status(session.path(), &address, &token, &[]);
    assert!(ok, "the head serves on");
    assert!(
        !shown.contains(&token[..8]),
        "no piece of the token in node ids or session names: {shown}"
    );
}
