//! One TensorBoard event file: `Event` protos in TFRecord framing.
//!
//! Each record is `length (u64 LE) | masked CRC32C of length | data | masked
//! CRC32C of data`, the framing TensorFlow's `RecordWriter` uses. The file is
//! named `events.out.tfevents.<secs>.<host>.<pid>.<n>`, which is how
//! TensorBoard finds event files, and starts with a `brain.Event:2` version
//! record. Writes are synchronous on the caller's thread: a run writes a few
//! kilobytes per iteration, so a writer thread would only add a place for I/O
//! errors to get lost.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use super::output_file::OutputFile;
use super::summary::{Event, Summary, What};

pub struct EventFileWriter {
    file: OutputFile,
}

impl EventFileWriter {
    /// Creates a new event file in `dir` (an existing directory).
    pub fn create(dir: &Path) -> io::Result<Self> {
        static CREATED: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "events.out.tfevents.{}.{}.{}.{}",
            wall_time() as u64,
            hostname(),
            std::process::id(),
            CREATED.fetch_add(1, Ordering::Relaxed)
        );
        let mut writer = EventFileWriter {
            file: OutputFile::append(&dir.join(name))?,
        };
        writer.write_event(&Event {
            wall_time: wall_time(),
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        })?;
        writer.flush()?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Appends `summary` at `step`, stamped with the current wall time.
    pub fn write_summary(&mut self, step: i64, summary: Summary) -> io::Result<()> {
        if summary.value.is_empty() {
            return Ok(());
        }
        self.write_event(&Event {
            wall_time: wall_time(),
            step,
            what: Some(What::Summary(summary)),
        })
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn write_event(&mut self, event: &Event) -> io::Result<()> {
        self.file.write_all(&record(&event.encode_to_vec()))
    }
}

/// `data` framed as one TFRecord.
fn record(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut record = Vec::with_capacity(data.len() + 16);
    record.extend_from_slice(&length);
    record.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    record.extend_from_slice(data);
    record.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    record
}

/// TFRecord's CRC: CRC32C rotated and offset, so that a CRC of data that
/// contains CRCs stays well distributed.
fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Reads event files back, checking the framing; shared by the loggers'
/// tests.
#[cfg(test)]
pub(super) mod read {
    use super::*;

    /// Every record's data, or which CRC did not match.
    pub fn records(bytes: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
        let crc_at = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().unwrap());
        let mut records = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (length, tail) = rest.split_at(8);
            if crc_at(tail) != masked_crc32c(length) {
                return Err("length CRC");
            }
            let len = u64::from_le_bytes(length.try_into().unwrap()) as usize;
            let (data, tail) = tail[4..].split_at(len);
            if crc_at(tail) != masked_crc32c(data) {
                return Err("data CRC");
            }
            records.push(data.to_vec());
            rest = &tail[4..];
        }
        Ok(records)
    }

    /// The events of the only event file in `dir`.
    pub fn events(dir: &Path) -> Vec<Event> {
        let files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("tfevents"))
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        records(&std::fs::read(&files[0]).unwrap())
            .unwrap()
            .iter()
            .map(|r| Event::decode(r.as_slice()).unwrap())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRC32C test vector of RFC 3720 (32 zero bytes), masked.
    #[test]
    fn masked_crc_matches_the_reference_vector() {
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        let masked = 0x8a91_36aau32.rotate_right(15).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc32c(&[0u8; 32]), masked);
    }

    #[test]
    fn records_read_back_with_valid_crcs() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = EventFileWriter::create(dir.path()).unwrap();
        writer
            .write_summary(7, Summary::scalars([("a/b", 1.5)]))
            .unwrap();
        writer.write_summary(8, Summary::scalars([])).unwrap();
        writer.flush().unwrap();
        let name = writer.path().file_name().unwrap().to_string_lossy();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let events = read::events(dir.path());
        assert_eq!(events.len(), 2, "an empty summary writes nothing");
        assert_eq!(
            events[0].what,
            Some(What::FileVersion("brain.Event:2".into()))
        );
        assert_eq!(events[1].step, 7);
        assert!(events[1].wall_time > 1.7e9, "real wall time");
        assert_eq!(
            events[1].what,
            Some(What::Summary(Summary::scalars([("a/b", 1.5)])))
        );
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let framed = record(b"payload");
        assert_eq!(read::records(&framed).unwrap(), [b"payload"]);
        let mut length_flipped = framed.clone();
        length_flipped[9] ^= 1;
        assert_eq!(read::records(&length_flipped), Err("length CRC"));
        let mut data_flipped = framed;
        data_flipped[14] ^= 1;
        assert_eq!(read::records(&data_flipped), Err("data CRC"));
    }
}
