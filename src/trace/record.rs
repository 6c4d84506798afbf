//! The fixed-size record one intercepted call becomes, and its field table.
//!
//! A record is plain integers: no pointer into program memory is ever followed, nothing is
//! formatted or allocated when it is made. Formatting happens later, on the writer thread.

use crate::abi::types::{Api, Hook};
use crate::memmap::MemKind;

/// The fault a record carries: the task that decided the call ([`FaultTag::Off`]: none),
/// stored as its discriminant, with its code or duration in [`Record::fault_arg`]. The
/// fault module's own list of tasks, so that the two cannot disagree.
pub use crate::fault::TaskKind as FaultTag;

/// One call, as the ring stores it and the writer reads it: plain integers, 128 bytes (two
/// 64-byte ring units), written straight into the calling thread's ring by the pipeline and
/// decoded by the writer. No `tracing` dispatch, no packing: the field layout is the format.
///
/// The first 16 bytes are the header the ring reads to know a record's length (`units`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct Record {
    /// `Hook` index (table order).
    pub hook: u8,
    pub depth: u8,
    /// [`FaultTag`].
    pub fault: u8,
    /// [`FLAG_SYNC`], [`FLAG_EFFECTIVE_KIND`].
    pub flags: u8,
    /// Ring units this record takes (always [`RECORD_UNITS`]).
    pub units: u8,
    /// Where src (low nibble) and dst (high nibble) live: [`mem_code`]; 0 = not classified.
    pub mem: u8,
    /// `check::RuleSet` bits.
    pub violations: u16,
    pub ret: i32,
    pub kind: i32,
    /// Raw clock ticks ([`super::clock::now`]) at entry and at return.
    pub start: u64,
    pub end: u64,
    pub dst: u64,
    pub src: u64,
    pub stream: u64,
    pub dispatcher: u64,
    pub dest_max: u64,
    pub count: u64,
    pub spitch: u64,
    pub height: u64,
    /// The fault's argument: the returned code (sign-extended) or the delay in ns.
    pub fault_arg: u64,
    pub event: u64,
    pub link: i32,
    pub remote_rank: u32,
    pub value: i32,
    /// The kind the runtime uses, with [`FLAG_EFFECTIVE_KIND`].
    pub effective_kind: i32,
}

/// The runtime ran this asynchronous copy synchronously (pageable memory).
pub const FLAG_SYNC: u8 = 1;
/// `effective_kind` holds the kind the runtime uses (it differs from `kind`).
pub const FLAG_EFFECTIVE_KIND: u8 = 2;

/// A memory kind as a record's nibble (0: not classified).
pub fn mem_code(kind: MemKind) -> u8 {
    match kind {
        MemKind::Device => 1,
        MemKind::Pinned => 2,
        MemKind::Registered => 3,
        MemKind::Pageable => 4,
        MemKind::Unknown => 5,
    }
}

/// The memory kind of a record's nibble.
pub fn mem_kind(code: u8) -> Option<MemKind> {
    match code {
        1 => Some(MemKind::Device),
        2 => Some(MemKind::Pinned),
        3 => Some(MemKind::Registered),
        4 => Some(MemKind::Pageable),
        5 => Some(MemKind::Unknown),
        _ => None,
    }
}

/// Ring units (64 bytes each) one record takes.
pub const RECORD_UNITS: u8 = 2;

/// u128 words per ring unit.
pub const UNIT_WORDS: usize = 4;

/// u128 words of a record.
pub const RECORD_WORDS: usize = RECORD_UNITS as usize * UNIT_WORDS;

const _: () = assert!(std::mem::size_of::<Record>() == RECORD_WORDS * 16);

impl Default for Record {
    fn default() -> Self {
        Record {
            hook: 0,
            depth: 0,
            fault: 0,
            flags: 0,
            units: RECORD_UNITS,
            mem: 0,
            violations: 0,
            ret: 0,
            kind: 0,
            start: 0,
            end: 0,
            dst: 0,
            src: 0,
            stream: 0,
            dispatcher: 0,
            dest_max: 0,
            count: 0,
            spitch: 0,
            height: 0,
            fault_arg: 0,
            event: 0,
            link: 0,
            remote_rank: 0,
            value: 0,
            effective_kind: 0,
        }
    }
}

impl Record {
    /// The hooked function (the seed ACL copy for an index the table does not know).
    pub fn hook(&self) -> Hook {
        Hook::from_index(self.hook).unwrap_or(Hook::AclrtMemcpyAsync)
    }

    pub fn api(&self) -> Api {
        self.hook().api()
    }

    /// The record as the ring's words.
    #[inline(always)]
    pub fn to_words(&self) -> [u128; RECORD_WORDS] {
        // SAFETY: `Record` is `repr(C)`, exactly `RECORD_WORDS * 16` bytes (asserted above),
        // 16-byte aligned, made of integers only with every padding byte a named field.
        unsafe { std::mem::transmute::<Record, [u128; RECORD_WORDS]>(*self) }
    }

    /// Stores the record as the first words of `words` (as many as fit).
    #[inline(always)]
    pub fn write_to(self, words: &mut [u128]) {
        if words.len() >= RECORD_WORDS {
            // SAFETY: `words` holds at least `RECORD_WORDS * 16` bytes, 16-byte aligned
            // (`u128`), and `Record` is `repr(C)`, exactly that size and alignment, made of
            // integers only: any record is valid as words and vice versa.
            unsafe { words.as_mut_ptr().cast::<Record>().write(self) };
        } else {
            let n = words.len();
            words.copy_from_slice(&self.to_words()[..n]);
        }
    }

    /// A record back from the ring's words (missing words read as 0).
    #[inline]
    pub fn from_words(words: &[u128]) -> Record {
        let mut w = [0u128; RECORD_WORDS];
        let n = words.len().min(RECORD_WORDS);
        w[..n].copy_from_slice(&words[..n]);
        // SAFETY: every bit pattern is a valid `Record` (integers only, no padding).
        unsafe { std::mem::transmute::<[u128; RECORD_WORDS], Record>(w) }
    }
}

/// Ring units of the record whose first word is `first` (its header).
#[inline]
pub fn units_of(first: u128) -> u64 {
    ((first >> 32) as u8).clamp(1, RECORD_UNITS) as u64
}

/// The record a ring holds (its units' words).
#[inline]
pub fn unpack(words: &[u128]) -> Record {
    Record::from_words(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Decision;

    proptest::proptest! {
        /// What the writer reads back from the ring is exactly the record stored.
        #[test]
        fn records_round_trip_through_words(
            words: [u64; 12],
            small: [u32; 5],
            tags: (u8, u8, u8, u16),
        ) {
            let rec = Record {
                hook: tags.0 % Hook::ALL.len() as u8,
                depth: tags.1,
                fault: tags.2 % 5,
                violations: tags.3,
                ret: small[0] as i32,
                kind: small[1] as i32,
                start: words[0],
                end: words[1],
                dst: words[2],
                src: words[3],
                stream: words[4],
                dispatcher: words[5],
                dest_max: words[6],
                count: words[7],
                spitch: words[8],
                height: words[9],
                fault_arg: words[10],
                event: words[11],
                link: small[2] as i32,
                remote_rank: small[3],
                value: small[4] as i32,
                ..Record::default()
            };
            let w = rec.to_words();
            proptest::prop_assert_eq!(units_of(w[0]), RECORD_UNITS as u64);
            proptest::prop_assert_eq!(unpack(&w), rec);
        }
    }

    #[test]
    fn a_corrupt_length_still_reads_as_one_or_two_units() {
        assert_eq!(units_of(0), 1);
        assert_eq!(units_of(0xff << 32), RECORD_UNITS as u64);
    }

    #[test]
    fn fault_tags_round_trip() {
        for d in [
            Decision::Forward,
            Decision::Return(-7),
            Decision::Return(507_053),
            Decision::Delay(2_000_000),
            Decision::Skip,
            Decision::Abort,
        ] {
            let (tag, arg) = FaultTag::of(d);
            assert_eq!(FaultTag::from_u8(tag as u8).decision(arg), d);
        }
    }
}
