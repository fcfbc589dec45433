//! How the ranks of a group find each other before they connect.
//!
//! Each rank publishes its listener address and node under a key of the group
//! and waits for the keys of the others; after that, all traffic is
//! peer-to-peer. The store only has to offer put / blocking wait / delete, so
//! it is a trait: [`KvRendezvous`] uses the cluster's key-value store (ranks
//! in different processes or machines), [`InProcessRendezvous`] a map shared by
//! threads (ranks as threads in one process, as tests and the bench run them).
//!
//! The store also supplies the secret the ranks prove to each other (see the
//! `handshake` module): whoever can meet through a store shares its secret,
//! a key derived from the cluster token for the cluster's store, a random key
//! per map for threads.

use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A key-value store with a blocking wait, as used for the rendezvous.
pub trait Rendezvous: Send + Sync {
    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), String>;
    /// The value under `key`, waiting until it exists; an error after `timeout`.
    fn wait(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, String>;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn delete(&self, key: &str) -> Result<(), String>;
    /// The secret every rank meeting here shares; never sent anywhere.
    fn cluster_secret(&self) -> Result<Vec<u8>, String>;
}

/// A rendezvous through the cluster's KV store (`oxray_core::kv_*`); needs
/// `oxray_core::init` in the driver, and works unchanged inside workers.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvRendezvous;

impl Rendezvous for KvRendezvous {
    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), String> {
        oxray_core::kv_put(key, value).map_err(|error| error.to_string())
    }

    fn wait(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, String> {
        oxray_core::kv_wait(key, timeout).map_err(|error| error.to_string())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        oxray_core::kv_get(key).map_err(|error| error.to_string())
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        oxray_core::kv_delete(key).map_err(|error| error.to_string())
    }

    fn cluster_secret(&self) -> Result<Vec<u8>, String> {
        oxray_core::cluster_key("collective")
            .map(|key| key.to_vec())
            .map_err(|error| error.to_string())
    }
}

/// The published entries and the condition variable that wakes waiters when
/// one is added.
type SharedEntries = Arc<(Mutex<HashMap<String, Vec<u8>>>, Condvar)>;

/// A rendezvous for ranks that are threads of one process. Clones share the
/// same map and the same secret, drawn at random on first use.
#[derive(Debug, Clone, Default)]
pub struct InProcessRendezvous {
    shared: SharedEntries,
    secret: Arc<Mutex<Option<[u8; 32]>>>,
}

impl InProcessRendezvous {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Rendezvous for InProcessRendezvous {
    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), String> {
        let (map, changed) = &*self.shared;
        map.lock().insert(key.to_string(), value);
        changed.notify_all();
        Ok(())
    }

    fn wait(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        let (map, changed) = &*self.shared;
        let mut entries = map.lock();
        loop {
            if let Some(value) = entries.get(key) {
                return Ok(value.clone());
            }
            if changed.wait_until(&mut entries, deadline).timed_out() {
                return Err(format!("key {key:?} did not appear within {timeout:?}"));
            }
        }
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.shared.0.lock().get(key).cloned())
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        self.shared.0.lock().remove(key);
        Ok(())
    }

    fn cluster_secret(&self) -> Result<Vec<u8>, String> {
        let mut secret = self.secret.lock();
        let key = match *secret {
            Some(key) => key,
            None => *secret.insert(oxray_core::auth::random_bytes().map_err(|e| e.to_string())?),
        };
        Ok(key.to_vec())
    }
}
