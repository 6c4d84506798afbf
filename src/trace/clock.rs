//! Clocks: CLOCK_MONOTONIC for spans (so traces of processes on one host line up) and a
//! monotonic/realtime anchor for merging traces from several hosts.
//!
//! `clock_gettime` goes through the vDSO: no system call, no lock, no allocation.

/// Nanoseconds since an arbitrary point (boot), CLOCK_MONOTONIC.
#[inline]
pub fn monotonic_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds since the Unix epoch, CLOCK_REALTIME.
pub fn realtime_ns() -> u64 {
    read(libc::CLOCK_REALTIME)
}

#[inline]
fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clocks used here always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The same instant on both clocks, read as close together as possible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub monotonic_ns: u64,
    pub realtime_ns: u64,
}

impl Anchor {
    /// Reads both clocks, keeping the pair with the tightest bracket out of a few tries.
    pub fn now() -> Anchor {
        let mut best = (
            u64::MAX,
            Anchor {
                monotonic_ns: 0,
                realtime_ns: 0,
            },
        );
        for _ in 0..5 {
            let a = monotonic_ns();
            let r = realtime_ns();
            let b = monotonic_ns();
            if b - a < best.0 {
                best = (
                    b - a,
                    Anchor {
                        monotonic_ns: a + (b - a) / 2,
                        realtime_ns: r,
                    },
                );
            }
        }
        best.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_advances_and_anchor_is_consistent() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a);
        let anchor = Anchor::now();
        assert!(anchor.monotonic_ns >= a);
        // Realtime is after 2020 in any sane environment.
        assert!(anchor.realtime_ns > 1_577_836_800_000_000_000);
    }
}
