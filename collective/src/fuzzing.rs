//! Entry points for fuzzers: every decoder of bytes a rank takes from another
//! process (the rendezvous record, the greeting, the frame header in front of
//! every block). Not an API; the libFuzzer target in `fuzz/` and the bounded
//! property tests below call the same functions.

use crate::error::OpKind;
use crate::greeting::{Hello, Record};
use crate::wire::{FrameHeader, HeaderCheck, RawHeader, WireFormat, HEADER_BYTES};

/// Decodes `bytes` as each kind of peer input; returns how many decoded.
/// Never panics, allocates at most a few bounded strings.
pub fn decode_peer_input(bytes: &[u8]) -> usize {
    let greeting = Hello::read(bytes).is_ok();
    let record = Record::decode(bytes).is_some();
    let header = bytes.first_chunk::<HEADER_BYTES>().is_some_and(|header| {
        let expected = FrameHeader {
            op: OpKind::Allreduce,
            format: WireFormat::F32,
            sequence: 1,
            total_elements: 1024,
            block_elements: 256,
        };
        matches!(
            expected.check(&RawHeader::decode(header)),
            HeaderCheck::Matches
        )
    });
    usize::from(greeting) + usize::from(record) + usize::from(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::greeting::MAX_HELLO_STRING_BYTES;
    use proptest::prelude::*;
    use std::path::PathBuf;

    /// Inputs per property: 4,096 in the normal test run, `PROPTEST_CASES`
    /// for a longer campaign.
    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(4096)
    }

    fn hello(rank: u32, world: u32, label: String, path: String) -> Hello {
        Hello {
            world_size: world as usize,
            rank: rank as usize,
            label,
            segment: Some(PathBuf::from(path.clone())).filter(|_| !path.is_empty()),
            mailbox: None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert!(decode_peer_input(&bytes) <= 3);
        }

        #[test]
        fn greetings_round_trip_and_any_corruption_is_bounded(
            rank in any::<u32>(),
            world in any::<u32>(),
            label in "[a-z0-9.-]{0,64}",
            path in "(/dev/shm/[a-z0-9-]{1,40})?",
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            mask in 1u8..,
        ) {
            let sent = hello(rank, world, label, path);
            let bytes = sent.encode();
            let received = Hello::read(bytes.as_slice()).expect("a valid greeting decodes");
            prop_assert_eq!(received.encode(), bytes.clone());
            // Truncated anywhere: an error, never a partial greeting.
            let short = &bytes[..cut.index(bytes.len())];
            prop_assert!(Hello::read(short).is_err());
            // One byte flipped: an error, or a greeting within the bounds.
            let mut corrupted = bytes.clone();
            let at = flip.index(corrupted.len());
            corrupted[at] ^= mask;
            if let Ok(hello) = Hello::read(corrupted.as_slice()) {
                prop_assert!(hello.label.len() <= MAX_HELLO_STRING_BYTES);
            }
        }

        #[test]
        fn records_round_trip_and_junk_is_refused(
            world in any::<u32>(),
            port in any::<u16>(),
            label in "[a-z0-9.-]{1,64}",
            junk in "[^0-9]{1,8}",
        ) {
            let record = Record {
                world_size: world as usize,
                address: format!("127.0.0.1:{port}"),
                mailbox: None,
                label: label.clone(),
            };
            let decoded = Record::decode(&record.encode()).expect("a valid record decodes");
            prop_assert_eq!(decoded.world_size, world as usize);
            prop_assert_eq!(decoded.label, label);
            let junk_world = format!("{junk}\n127.0.0.1:1\n\nnode");
            prop_assert!(Record::decode(junk_world.as_bytes()).is_none());
        }
    }
}
