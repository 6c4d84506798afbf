//! The shim's one pseudo-random generator: SplitMix64, counter-based, so that a draw is a
//! pure function of (seed, stream, index) and needs no shared mutable state. It decides the
//! fault probabilities and derives a forked child's seed from its parent's.
//!
//! Pure arithmetic: no state, no globals, no clock.

/// SplitMix64's increment (2^64 / φ, odd).
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A draw below this fires always: every 64-bit value is.
pub(super) const ALWAYS: u128 = 1 << 64;

/// SplitMix64's finaliser: a bijection of 64-bit words that mixes every input bit into
/// every output bit.
const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One SplitMix64 step from state `x`.
const fn splitmix64(x: u64) -> u64 {
    mix(x.wrapping_add(GOLDEN_GAMMA))
}

/// The key of the random stream of action `action` of rule `rule`.
pub(super) fn stream_key(rule: usize, action: usize) -> u64 {
    splitmix64(((rule as u64) << 32 | action as u64) ^ 0x6E70_7573_6869_6D00)
}

/// The `n`-th draw of a stream: the `n`-th output of a SplitMix64 generator whose start
/// state is derived from the seed and the stream, so nearby seeds give unrelated sequences.
pub(super) fn draw(seed: u64, key: u64, n: u64) -> u64 {
    splitmix64(splitmix64(seed ^ key).wrapping_add(n.wrapping_mul(GOLDEN_GAMMA)))
}

/// The threshold a draw must stay below for a probability of `percent` (0–100) to fire.
pub(super) fn threshold(percent: f64) -> u128 {
    if percent >= 100.0 {
        ALWAYS
    } else {
        // `as` saturates; p / 100 < 1 keeps the product below 2^64.
        (percent / 100.0 * 18_446_744_073_709_551_616.0) as u128
    }
}

/// The seed change of the `n`-th child of a process `generation` forks deep: the two
/// counters folded into one word and mixed.
pub fn child_seed(generation: u64, n: u64) -> u64 {
    mix(generation.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ n.wrapping_mul(GOLDEN_GAMMA))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // The first outputs of Vigna's splitmix64.c from state 0 (its `next()` adds the
        // gamma to the state, then mixes).
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(
            splitmix64(GOLDEN_GAMMA),
            0x6E78_9E6A_A1B9_65F4,
            "second output"
        );
    }

    #[test]
    fn child_seeds_differ_by_generation_and_number() {
        let seeds: std::collections::HashSet<u64> = (1..=4)
            .flat_map(|g| (1..=64).map(move |n| child_seed(g, n)))
            .collect();
        assert_eq!(seeds.len(), 4 * 64);
        assert_eq!(threshold(100.0), ALWAYS);
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(50.0), 1 << 63);
    }
}
