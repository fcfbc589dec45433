//! Feeds arbitrary bytes to every decoder that reads what the network sends a
//! head, node or worker: each must return an error, never panic or hang.
//! Run with `cargo +nightly fuzz run wire_decoders` from `fuzz/`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oxray_core::wire::{decode_any_message, WireMessage};

fuzz_target!(|bytes: &[u8]| {
    for kind in WireMessage::ALL {
        let _ = decode_any_message(kind, bytes);
    }
});
