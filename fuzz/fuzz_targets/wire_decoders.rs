//! Feeds arbitrary bytes to every decoder that reads what the network sends a
//! head, node, worker or collective rank: each must return an error, never
//! panic or hang. Run with `scripts/fuzz.sh` (needs a nightly toolchain);
//! the corpus it grows is kept in `fuzz/corpus/wire_decoders`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oxray_core::wire::{decode_any_message, WireMessage};

fuzz_target!(|bytes: &[u8]| {
    for kind in WireMessage::ALL {
        let _ = decode_any_message(kind, bytes);
    }
    let _ = oxray_collective::fuzzing::decode_peer_input(bytes);
});
