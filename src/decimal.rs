//! Integers as ASCII decimal digits, written into a caller's buffer: the one integer
//! writer of the shim, shared by the trace's JSON and the fault actions' text.
//!
//! A leaf: imports nothing of the crate. Never allocates, never fails, never formats
//! through `core::fmt` (the writer thread formats every event with it).

/// `"00" "01" … "99"`: two decimal digits per entry.
pub const DIGITS2: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// The most digits a `u64` has.
pub const U64_DIGITS: usize = 20;

/// Number of decimal digits of `v` (1 for 0).
#[inline]
pub fn dec_len(v: u64) -> usize {
    const POW10: [u64; U64_DIGITS] = {
        let mut t = [1u64; U64_DIGITS];
        let mut i = 1;
        while i < U64_DIGITS {
            t[i] = t[i - 1] * 10;
            i += 1;
        }
        t
    };
    // floor(log10(2^bits)) is a lower bound, too small by at most one.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    let guess = (bits * 1233) >> 12;
    (guess + usize::from(v >= POW10[guess])).max(1)
}

/// Writes `v` in decimal at the start of `out` (at least [`dec_len`]`(v)` bytes, so 20
/// always suffice); returns the length. Two digits at a time, straight into place: no
/// temporary, no copy.
#[inline]
pub fn write_dec(out: &mut [u8], mut v: u64) -> usize {
    let n = dec_len(v);
    let digits = &mut out[..n];
    let mut i = n;
    while v >= 100 {
        let r = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGITS2[r..r + 2]);
    }
    if v >= 10 {
        let r = v as usize * 2;
        digits[..2].copy_from_slice(&DIGITS2[r..r + 2]);
    } else {
        digits[0] = b'0' + v as u8;
    }
    n
}

/// The two digits of `v` (below 100), `05` for 5.
#[inline]
pub fn two_digits(v: usize) -> [u8; 2] {
    let r = v * 2;
    [DIGITS2[r], DIGITS2[r + 1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_std_at_every_length_boundary() {
        let mut values = vec![0, 1, 9, 10, 11, 99, 100, 101, u64::MAX, u64::MAX - 1];
        let mut p = 1u64;
        while let Some(next) = p.checked_mul(10) {
            values.extend([next - 1, next, next + 1]);
            p = next;
        }
        for v in values {
            let mut buf = [0u8; U64_DIGITS];
            let n = write_dec(&mut buf, v);
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), v.to_string());
            assert_eq!(dec_len(v), v.to_string().len(), "{v}");
        }
        assert_eq!(two_digits(5), *b"05");
        assert_eq!(two_digits(99), *b"99");
    }
}
