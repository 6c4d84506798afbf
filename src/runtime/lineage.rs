//! The seed of the fault probabilities and its fork lineage: a process's seed is the
//! configured (or random) seed XOR its lineage, and each fork changes the child's by a
//! delta drawn from the fault module's generator, so a child's faults are reproducible.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::fault::child_seed;
use crate::trace;

/// The seed in use (0 before initialisation).
static SEED: AtomicU64 = AtomicU64::new(0);
/// fork()s made by this process so far (numbers each child).
static FORKS: AtomicU64 = AtomicU64::new(0);
/// Which child of which child this process is, folded into one word (0 in the original
/// process). A process's seed is always the configured (or random) seed XOR its lineage, so
/// a child gets the same seed whether its parent had chosen its own before the fork or not.
static LINEAGE: AtomicU64 = AtomicU64::new(0);
/// How many forks deep this process is.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// A random seed below 2^53, so that it survives a round trip through JavaScript-based
/// trace viewers exactly (and can be copied from Perfetto to replay a run).
fn random_seed() -> u64 {
    let mut seed = 0u64;
    // SAFETY: `seed` is 8 writable bytes; getrandom never writes more than asked.
    let n = unsafe { libc::getrandom((&mut seed as *mut u64).cast(), 8, libc::GRND_NONBLOCK) };
    if n != 8 {
        seed = trace::clock::realtime_ns() ^ ((std::process::id() as u64) << 32);
    }
    seed & ((1 << 53) - 1)
}

/// Chooses this process's seed at initialisation: `configured` (`NPUSHIM_SEED`) or a random
/// one, combined with the lineage; tells the trace.
pub(super) fn choose(configured: Option<u64>) -> u64 {
    let seed = configured.unwrap_or_else(random_seed) ^ LINEAGE.load(Ordering::Relaxed);
    SEED.store(seed, Ordering::Relaxed);
    trace::set_seed(seed);
    seed
}

/// The seed in use (0 before initialisation).
pub fn seed() -> u64 {
    SEED.load(Ordering::Relaxed)
}

/// `pthread_atfork` prepare handler: numbers the coming child.
pub(super) fn fork_prepare() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// `pthread_atfork` child handler. The child's seed derives deterministically from the
/// parent's, the fork's number and its depth: the same delta goes into the seed in use (if
/// the parent had one) and into the lineage (for a seed chosen later), so both ways give the
/// same seed.
pub(super) fn fork_child() {
    let n = FORKS.load(Ordering::Relaxed);
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
    // Below 2^53, like random seeds, so that JavaScript-based viewers show it exactly.
    let delta = child_seed(generation, n) & ((1 << 53) - 1);
    trace::set_seed(SEED.fetch_xor(delta, Ordering::Relaxed) ^ delta);
    LINEAGE.fetch_xor(delta, Ordering::Relaxed);
    FORKS.store(0, Ordering::Relaxed);
}
