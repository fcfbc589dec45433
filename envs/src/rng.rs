//! The random number generator behind env resets and space sampling.
//!
//! Episodes must be the same for the same seed on every machine and with every
//! build, so the generator is PCG (`Pcg64Mcg`), whose output stream is fixed by
//! its specification, rather than a platform- or version-dependent default.
//! Unseeded resets draw their seed from the standard library's per-process
//! hasher keys, which are random, so no extra entropy crate is needed.

use rand::SeedableRng;
use std::hash::{BuildHasher, Hasher};

/// The generator every env and space uses.
pub type EnvRng = rand_pcg::Pcg64Mcg;

/// A generator for `seed`, or a freshly (randomly) seeded one for `None`,
/// mirroring Gymnasium's `np_random` seeding.
pub fn seeded_rng(seed: Option<u64>) -> EnvRng {
    EnvRng::seed_from_u64(seed.unwrap_or_else(fresh_seed))
}

/// A random seed from the OS-seeded keys of `std`'s `RandomState`.
pub fn fresh_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x6f78_7261_7973_6565);
    hasher.finish()
}
