//! What ranks tell each other before they exchange data: the record each
//! publishes through the rendezvous (where to connect, its doorbell, its
//! node) and the greeting a connecting rank sends (who it is, the rings it
//! set up).
//!
//! Both come from other processes, so their decoders bound every length and
//! return an error for anything malformed; the `fuzzing` module feeds them
//! arbitrary bytes. Paths in them are only names here: the `shm` module
//! decides whether a named file may be mapped.

use std::io::Read;
use std::path::PathBuf;

const HELLO_MAGIC: u32 = u32::from_le_bytes(*b"OXHI");
/// Longest string (node label, file path) accepted in a hello, so a stray
/// connection cannot make a rank allocate without bound.
pub(crate) const MAX_HELLO_STRING_BYTES: usize = 4096;

/// What a rank publishes for its peers: enough to connect and to decide on
/// shared memory.
pub(crate) struct Record {
    pub world_size: usize,
    pub address: String,
    pub mailbox: Option<PathBuf>,
    pub label: String,
}

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mailbox = self
            .mailbox
            .as_ref()
            .map(|path| path.display().to_string())
            .unwrap_or_default();
        format!(
            "{}\n{}\n{mailbox}\n{}",
            self.world_size, self.address, self.label
        )
        .into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.splitn(4, '\n');
        let world_size = lines.next()?.parse().ok()?;
        let address = lines.next()?.to_string();
        let mailbox = non_empty_path(lines.next()?.to_string());
        let label = lines.next()?.to_string();
        Some(Record {
            world_size,
            address,
            mailbox,
            label,
        })
    }
}

fn non_empty_path(text: String) -> Option<PathBuf> {
    Some(text)
        .filter(|text| !text.is_empty())
        .map(PathBuf::from)
}

/// The greeting a connecting rank sends first.
pub(crate) struct Hello {
    pub world_size: usize,
    pub rank: usize,
    pub label: String,
    /// The pair's rings, when the connecting rank set them up.
    pub segment: Option<PathBuf>,
    /// The connecting rank's doorbell.
    pub mailbox: Option<PathBuf>,
}

impl Hello {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(64 + self.label.len());
        bytes.extend_from_slice(&HELLO_MAGIC.to_le_bytes());
        bytes.extend_from_slice(&(self.world_size as u32).to_le_bytes());
        bytes.extend_from_slice(&(self.rank as u32).to_le_bytes());
        let path_text = |path: &Option<PathBuf>| {
            path.as_ref()
                .map(|path| path.display().to_string())
                .unwrap_or_default()
        };
        for text in [
            self.label.clone(),
            path_text(&self.segment),
            path_text(&self.mailbox),
        ] {
            bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
            bytes.extend_from_slice(text.as_bytes());
        }
        bytes
    }

    pub(crate) fn read(mut stream: impl Read) -> std::io::Result<Hello> {
        let invalid =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut read_u32 = || -> std::io::Result<u32> {
            let mut word = [0u8; 4];
            stream.read_exact(&mut word)?;
            Ok(u32::from_le_bytes(word))
        };
        if read_u32()? != HELLO_MAGIC {
            return Err(invalid("not an oxray collective peer"));
        }
        let world_size = read_u32()? as usize;
        let rank = read_u32()? as usize;
        let mut read_text = || -> std::io::Result<String> {
            let mut word = [0u8; 4];
            stream.read_exact(&mut word)?;
            let len = u32::from_le_bytes(word) as usize;
            if len > MAX_HELLO_STRING_BYTES {
                return Err(invalid("greeting field too long"));
            }
            let mut text = vec![0u8; len];
            stream.read_exact(&mut text)?;
            String::from_utf8(text).map_err(|_| invalid("greeting field is not UTF-8"))
        };
        let label = read_text()?;
        let segment = non_empty_path(read_text()?);
        let mailbox = non_empty_path(read_text()?);
        Ok(Hello {
            world_size,
            rank,
            label,
            segment,
            mailbox,
        })
    }
}
