//! Clocks: span timestamps on CLOCK_MONOTONIC (so traces of processes on one host line up)
//! and a monotonic/realtime anchor for merging traces from several hosts.
//!
//! The hot path reads a raw tick ([`now`]): the CPU's time-stamp counter where it is
//! invariant and the kernel itself keeps CLOCK_MONOTONIC on it (about 10 ns instead of two
//! vDSO `clock_gettime` calls at 20–40 ns each in a VM), CLOCK_MONOTONIC nanoseconds
//! otherwise. The writer maps ticks onto CLOCK_MONOTONIC with a [`Calibration`]: pairs of
//! (tick, CLOCK_MONOTONIC) readings taken off the hot path, so every timestamp in the trace
//! is a CLOCK_MONOTONIC time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

/// Whether [`now`] reads the time-stamp counter (decided once, at initialisation).
static USE_TSC: AtomicBool = AtomicBool::new(false);

#[cfg(target_arch = "x86_64")]
#[inline]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC is available on every x86_64 CPU and has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn rdtsc() -> u64 {
    monotonic_ns()
}

/// A raw timestamp for the hot path; convert with [`Calibration::to_ns`].
#[inline]
pub fn now() -> u64 {
    if USE_TSC.load(Ordering::Relaxed) {
        rdtsc()
    } else {
        monotonic_ns()
    }
}

/// True if the TSC is invariant and the kernel's clocksource is the TSC (so CLOCK_MONOTONIC
/// advances with it and a linear map between them is exact up to NTP slewing).
fn tsc_usable() -> bool {
    if !cfg!(target_arch = "x86_64") {
        return false;
    }
    let clocksource =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default();
    if clocksource.trim() != "tsc" {
        return false;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|flags| {
            let has = |w: &str| flags.split_whitespace().any(|f| f == w);
            has("constant_tsc") && has("nonstop_tsc")
        })
}

/// The first calibration point, taken when the clock is chosen.
static BASE_TICK: AtomicU64 = AtomicU64::new(0);
static BASE_NS: AtomicU64 = AtomicU64::new(0);

/// Chooses the clock for this process (once, off the hot path) and takes the first
/// calibration point.
pub fn init() {
    let tsc = tsc_usable();
    USE_TSC.store(tsc, Ordering::Relaxed);
    let (tick, ns) = pair();
    BASE_TICK.store(tick, Ordering::Relaxed);
    BASE_NS.store(ns, Ordering::Relaxed);
}

/// The clock in use, for the trace metadata.
pub fn source() -> &'static str {
    if USE_TSC.load(Ordering::Relaxed) {
        "tsc"
    } else {
        "clock_gettime"
    }
}

/// A tick and the CLOCK_MONOTONIC time at the same instant (the midpoint of the tightest
/// of a few brackets).
fn pair() -> (u64, u64) {
    if !USE_TSC.load(Ordering::Relaxed) {
        let ns = monotonic_ns();
        return (ns, ns);
    }
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..5 {
        let a = rdtsc();
        let ns = monotonic_ns();
        let b = rdtsc();
        if b.wrapping_sub(a) < best.0 {
            best = (b.wrapping_sub(a), a + (b - a) / 2, ns);
        }
    }
    (best.1, best.2)
}

/// Maps ticks onto CLOCK_MONOTONIC nanoseconds: the rate comes from the first calibration
/// point and the latest one (a long baseline), the offset from the latest (so recent
/// timestamps, which are all the writer ever converts, are the most exact).
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    tick: u64,
    ns: u64,
    /// Nanoseconds per tick as a 32.32 fixed-point number.
    rate: u64,
    identity: bool,
}

impl Calibration {
    /// Ticks that already are CLOCK_MONOTONIC nanoseconds.
    pub const IDENTITY: Calibration = Calibration {
        tick: 0,
        ns: 0,
        rate: 1 << 32,
        identity: true,
    };

    /// Takes a new calibration point now.
    pub fn now() -> Calibration {
        let (tick, ns) = pair();
        if !USE_TSC.load(Ordering::Relaxed) {
            return Calibration {
                tick,
                ns,
                rate: 1 << 32,
                identity: true,
            };
        }
        let (t0, n0) = (
            BASE_TICK.load(Ordering::Relaxed),
            BASE_NS.load(Ordering::Relaxed),
        );
        let rate = if tick > t0 && ns > n0 && tick - t0 > 1_000_000 {
            (((ns - n0) as u128) << 32) / (tick - t0) as u128
        } else {
            // Too soon for a measured rate: ask the kernel's own once (rare: a process that
            // exits within a millisecond of its first call).
            let t1 = rdtsc();
            let n1 = monotonic_ns();
            std::thread::sleep(std::time::Duration::from_millis(2));
            let t2 = rdtsc();
            let n2 = monotonic_ns();
            (((n2 - n1) as u128) << 32) / (t2 - t1).max(1) as u128
        } as u64;
        Calibration {
            tick,
            ns,
            rate,
            identity: false,
        }
    }

    /// CLOCK_MONOTONIC nanoseconds of a raw tick.
    #[inline]
    pub fn to_ns(&self, tick: u64) -> u64 {
        if self.identity {
            return tick;
        }
        let scaled = |d: u64| ((d as u128 * self.rate as u128) >> 32) as u64;
        if tick >= self.tick {
            self.ns + scaled(tick - self.tick)
        } else {
            self.ns.saturating_sub(scaled(self.tick - tick))
        }
    }
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

    #[test]
    fn ticks_map_onto_clock_monotonic() {
        init();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let before = monotonic_ns();
        let tick = now();
        let after = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let cal = Calibration::now();
        let ns = cal.to_ns(tick);
        // Within a microsecond of the bracket it was read in, whichever clock is in use.
        assert!(
            ns + 1_000 >= before && ns <= after + 1_000,
            "{before} <= {ns} <= {after} ({})",
            source()
        );
        // Durations come out in nanoseconds: a tick interval lies within the monotonic
        // brackets around its two ends (give or take the calibration's error).
        let m0 = monotonic_ns();
        let t0 = now();
        let m1 = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let m2 = monotonic_ns();
        let t1 = now();
        let m3 = monotonic_ns();
        let d = cal.to_ns(t1) - cal.to_ns(t0);
        let slack = (m3 - m0) / 100 + 2_000;
        assert!(
            d + slack >= m2 - m1 && d <= m3 - m0 + slack,
            "{} <= {d} <= {} ns",
            m2 - m1,
            m3 - m0
        );
    }
}
