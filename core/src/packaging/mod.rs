//! Getting a job's executable onto every node (Ray's runtime-env packaging).
//!
//! A job's workers run the driver's executable, named by its SHA-256 digest.
//! A node runs the file at the driver's path when it holds those very bytes (a
//! shared file system); otherwise it fetches a copy from the head, which got
//! it from the driver (an upload when the head cannot see the path, or its own
//! image for the embedded cluster), verifies the digest and caches it under the
//! session directory by digest (`executable_cache.rs`, bounded in bytes).
//! This file holds what names an executable and moves it: digests, the
//! driver's offer to the head, a node's fetch from it.
//!
//! Digests of local files are remembered per (device, inode, size, mtime), so
//! starting many workers hashes a file once.

mod executable_cache;

pub(crate) use executable_cache::{ExecutableCache, Plan};

use crate::error::ExecutableProblem;
use crate::protocol::Chunk;
use crate::runtime_env::{JobRuntimeEnv, WorkingDirArchive};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tokio_stream::StreamExt;

/// Bytes per message when an executable moves between processes.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

/// Default bound of one node's executable cache (and of one executable).
pub const DEFAULT_EXECUTABLE_CACHE_BYTES: u64 = 8 << 30;

/// Whether nodes that cannot run the driver's executable from its path get a
/// copy from the head ([`InitOptions::ship_executable`](crate::InitOptions::ship_executable)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShipExecutable {
    /// Nodes always run a copy fetched from the head, even where the path
    /// holds the same bytes.
    Always,
    /// Nodes run the driver's path where it holds the same bytes, and fetch a
    /// copy from the head elsewhere.
    #[default]
    IfMissing,
    /// Nodes run the driver's path or fail: for shared file systems.
    Never,
}

/// The executable a job's workers run, named by its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobExecutable {
    /// Where the driver ran it from.
    pub path: String,
    /// SHA-256 of its bytes, lowercase hex.
    pub digest: String,
    pub size: u64,
    pub ship: ShipExecutable,
    /// The job's working directory and variables (`runtime_env/`).
    pub runtime_env: JobRuntimeEnv,
}

/// Where this process's own image can always be read, even when its file was
/// replaced or deleted since it started.
pub(crate) const OWN_IMAGE: &str = "/proc/self/exe";

impl JobExecutable {
    /// This process's executable: its path as started, the digest of its image.
    pub(crate) fn of_this_process(
        ship: ShipExecutable,
        runtime_env: JobRuntimeEnv,
    ) -> std::io::Result<Self> {
        let path = std::env::current_exe()?.to_string_lossy().into_owned();
        // Linux names a deleted image "PATH (deleted)"; the driver ran PATH.
        let path = path.strip_suffix(" (deleted)").unwrap_or(&path).to_string();
        let (digest, size) = hash_file(Path::new(OWN_IMAGE))?;
        Ok(JobExecutable {
            path,
            digest,
            size,
            ship,
            runtime_env,
        })
    }

    /// What keys the worker pools of this code: workers of the same bytes
    /// in the same runtime env are interchangeable.
    pub(crate) fn pool_key(&self) -> String {
        match self.runtime_env.key() {
            env if env.is_empty() => self.digest.clone(),
            env => format!("{}+{env}", self.digest),
        }
    }

    /// A working-directory archive as a file the head stores, serves and
    /// nodes cache by digest, like an executable that is never run from a
    /// path.
    pub(crate) fn archive_file(archive: &WorkingDirArchive) -> Self {
        JobExecutable {
            path: String::new(),
            digest: archive.digest.clone(),
            size: archive.size,
            ship: ShipExecutable::Always,
            runtime_env: JobRuntimeEnv::default(),
        }
    }
}

fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut size = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Identity of a file's current content, short of reading it.
type FileStamp = (u64, u64, u64, i64, i64);

static DIGESTS: Mutex<Option<HashMap<FileStamp, String>>> = Mutex::new(None);

/// SHA-256 of the file at `path`, or `None` when there is no file.
pub(crate) fn file_digest(path: &Path) -> std::io::Result<Option<String>> {
    let metadata = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let stamp = (
        metadata.dev(),
        metadata.ino(),
        metadata.size(),
        metadata.mtime(),
        metadata.mtime_nsec(),
    );
    if let Some(digest) = DIGESTS.lock().as_ref().and_then(|d| d.get(&stamp)) {
        return Ok(Some(digest.clone()));
    }
    let (digest, _) = hash_file(path)?;
    DIGESTS
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(stamp, digest.clone());
    Ok(Some(digest))
}

/// What the driver's path holds on this node.
pub(crate) enum AtPath {
    /// The driver's very bytes: run it from there.
    Same,
    /// Nothing there, or other bytes (with their digest).
    Missing,
    Different(String),
}

/// Compares the file at the executable's path with its digest.
pub(crate) fn check_path(executable: &JobExecutable) -> AtPath {
    match file_digest(Path::new(&executable.path)) {
        Ok(Some(digest)) if digest == executable.digest => AtPath::Same,
        Ok(Some(digest)) => AtPath::Different(digest),
        Ok(None) | Err(_) => AtPath::Missing,
    }
}

/// `bytes` (a working directory's archive, in memory) as upload chunks.
pub(crate) fn chunks_of(
    bytes: &[u8],
) -> impl tokio_stream::Stream<Item = Chunk> + Send + Unpin + 'static {
    let chunks: Vec<Chunk> = bytes
        .chunks(CHUNK_BYTES)
        .map(|data| Chunk {
            data: data.to_vec(),
        })
        .collect();
    tokio_stream::iter(chunks)
}

/// Reads a file in chunks, for serving it to a node or uploading it.
pub(crate) fn read_chunks(
    path: PathBuf,
) -> impl tokio_stream::Stream<Item = std::io::Result<Chunk>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                let _ = sender.blocking_send(Err(e));
                return;
            }
        };
        loop {
            let mut data = vec![0u8; CHUNK_BYTES];
            match file.read(&mut data) {
                Ok(0) => return,
                Ok(n) => {
                    data.truncate(n);
                    if sender.blocking_send(Ok(Chunk { data })).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = sender.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

type Head = crate::head::generated::head_client::HeadClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        crate::auth::AttachToken,
    >,
>;

async fn connect(address: &str, token: &str) -> crate::error::Result<Head> {
    let channel = crate::head_link::endpoint(address)?
        .connect()
        .await
        .map_err(|e| {
            let cause = crate::head_link::with_causes(&e);
            crate::head_link::unreachable(address, format!("cannot connect: {cause}"))
        })?;
    Ok(
        crate::head::generated::head_client::HeadClient::with_interceptor(
            channel,
            crate::auth::AttachToken::new(token)?,
        )
        .max_decoding_message_size(crate::wire::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::wire::MAX_MESSAGE_BYTES),
    )
}

/// Makes sure the head at `address` can serve this driver's executable to
/// nodes (unless `ship` is `Never`): it may read the driver's path itself,
/// else the driver uploads it; and its working-directory archive, if any,
/// which is always uploaded unless the head holds it already.
pub(crate) fn offer_to_head(
    address: &str,
    token: &str,
    executable: &JobExecutable,
    working_dir: Option<&[u8]>,
) -> crate::error::Result<()> {
    if executable.ship == ShipExecutable::Never && working_dir.is_none() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::error::Error::runtime("cannot start a runtime", e))?;
    runtime.block_on(async {
        let mut head = connect(address, token).await?;
        if executable.ship != ShipExecutable::Never {
            let image = read_chunks(PathBuf::from(OWN_IMAGE)).map_while(Result::ok);
            offer(&mut head, address, executable, image).await?;
        }
        if let (Some(bytes), Some(archive)) = (working_dir, &executable.runtime_env.working_dir) {
            let file = JobExecutable::archive_file(archive);
            offer(&mut head, address, &file, chunks_of(bytes)).await?;
        }
        Ok(())
    })
}

/// Uploads `file` (its bytes in `chunks`) unless the head can serve it.
async fn offer(
    head: &mut Head,
    address: &str,
    file: &JobExecutable,
    chunks: impl tokio_stream::Stream<Item = Chunk> + Send + 'static,
) -> crate::error::Result<()> {
    let refused = |reason: ExecutableProblem| crate::error::Error::ExecutableUnavailable {
        node: format!("the head at {address}"),
        reason,
    };
    let answer = head
        .query_executable(crate::protocol::ExecutableQuery {
            executable: file.clone(),
        })
        .await
        .map_err(|s| crate::auth::explain_refusal(&s, "the head", address))?
        .into_inner();
    if answer.present {
        return Ok(());
    }
    if file.size > answer.limit {
        return Err(refused(ExecutableProblem::TooLarge {
            size: file.size,
            limit: answer.limit,
        }));
    }
    let header = crate::protocol::ExecutableUpload::Header(file.clone());
    let upload =
        tokio_stream::once(header).chain(chunks.map(crate::protocol::ExecutableUpload::Chunk));
    head.upload_executable(upload).await.map_err(|s| {
        refused(ExecutableProblem::FetchFailed {
            message: format!("the upload was refused: {}", s.message()),
        })
    })?;
    Ok(())
}

/// Fetches a copy of `executable` from the head at `address` into `cache`.
pub(crate) async fn fetch_from_head(
    address: &str,
    token: &str,
    executable: &JobExecutable,
    cache: &ExecutableCache,
) -> Result<PathBuf, ExecutableProblem> {
    let failed = |message: String| ExecutableProblem::FetchFailed { message };
    let mut head = connect(address, token)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let chunks = head
        .fetch_executable(crate::protocol::ExecutableRequest {
            digest: executable.digest.clone(),
        })
        .await
        .map_err(|s| failed(s.message().to_string()))?
        .into_inner()
        .map(|chunk| chunk.map_err(|s| s.message().to_string()));
    cache.store(executable, chunks).await
}
