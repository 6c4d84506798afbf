//! The fixed-size record one intercepted call becomes, and its field table.
//!
//! A record is plain integers: no pointer into program memory is ever followed, nothing is
//! formatted or allocated when it is made. Formatting happens later, on the writer thread.

use crate::abi::types::Api;
use crate::fault::Decision;

/// Fault actions as stored in a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum FaultTag {
    #[default]
    None = 0,
    Return = 1,
    Delay = 2,
    Skip = 3,
    Abort = 4,
}

impl FaultTag {
    pub fn from_u8(v: u8) -> FaultTag {
        match v {
            1 => FaultTag::Return,
            2 => FaultTag::Delay,
            3 => FaultTag::Skip,
            4 => FaultTag::Abort,
            _ => FaultTag::None,
        }
    }

    /// Splits a decision into a tag and its argument (code or nanoseconds).
    pub fn of(decision: Decision) -> (FaultTag, u64) {
        match decision {
            Decision::Forward => (FaultTag::None, 0),
            Decision::Return(code) => (FaultTag::Return, code as i64 as u64),
            Decision::Delay(ns) => (FaultTag::Delay, ns),
            Decision::Skip => (FaultTag::Skip, 0),
            Decision::Abort => (FaultTag::Abort, 0),
        }
    }

    /// The decision back (for formatting).
    pub fn decision(self, arg: u64) -> Decision {
        match self {
            FaultTag::None => Decision::Forward,
            FaultTag::Return => Decision::Return(arg as i64 as i32),
            FaultTag::Delay => Decision::Delay(arg),
            FaultTag::Skip => Decision::Skip,
            FaultTag::Abort => Decision::Abort,
        }
    }
}

/// One call, as the writer needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Record {
    /// Raw clock ticks ([`super::clock::now`]) at entry and at return.
    pub start: u64,
    pub end: u64,
    pub dst: u64,
    pub src: u64,
    pub stream: u64,
    pub dispatcher: u64,
    pub dest_max: u64,
    pub count: u64,
    /// The fault's argument: the returned code (sign-extended) or the delay in ns.
    pub fault_arg: u64,
    pub kind: i32,
    pub link: i32,
    pub ret: i32,
    pub remote_rank: u32,
    pub api: u8,
    pub depth: u8,
    /// `check::RuleSet` bits.
    pub violations: u8,
    pub fault: u8,
}

impl Record {
    pub fn api(&self) -> Api {
        if self.api == Api::Hccl as u8 {
            Api::Hccl
        } else {
            Api::Acl
        }
    }
}

/// The `tracing` event of a call carries its arguments as a few typed integer fields, each
/// packing natural neighbours: every field visit costs two dynamic calls in `tracing-core`,
/// so four fields instead of seventeen is most of the difference between a recorder that
/// fits the per-call budget and one that does not (measured with callgrind: see
/// BENCHMARKS.md).
///
/// | field | type | layout |
/// |---|---|---|
/// | `span` | u128 | start tick (bits 64–127), duration in ticks (16–63, saturating), depth (8–13, saturating at 63), violations (0–7) |
/// | `addrs` | u128 | dst (high 64 bits), src (low 64) |
/// | `sizes` | u128 | destMax (high), count (low) |
/// | `call` | u128 | stream (high), kind (bits 32–63), ret (bits 0–31) |
/// | `peer` | u128 | HCCL only: dispatcher (high), remoteUserRank (bits 32–63), linkType (bits 0–31) |
/// | `fault` | u128 | only when a fault was injected: its action (high), code or delay (low) |
///
/// The API is the event's name. There are four shapes of the call event: API × whether a
/// fault was injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Acl = 0,
    AclFault = 1,
    Hccl = 2,
    HcclFault = 3,
}

/// Most fields an event of any shape has.
pub const MAX_FIELDS: usize = 6;

/// A call as a ring stores it: the event's field values by field index, with its shape in
/// bits 14–15 of `span` (which the event leaves 0), in one 64-byte unit of
/// [`UNIT_WORDS`] values for a plain ACL call and two otherwise. The writer [`unpack`]s it.
pub type Packed = [u128; MAX_FIELDS];

/// Field values per ring unit (64 bytes).
pub const UNIT_WORDS: usize = 4;

/// Ring units a record of `shape` takes.
#[inline]
pub fn units_for(shape: Shape) -> u64 {
    shape.fields().len().div_ceil(UNIT_WORDS) as u64
}

/// Ring units of the record whose first word (`span`, tagged) is `span`.
#[inline]
pub fn units_of(span: u128) -> u64 {
    units_for(shape_of(span))
}

fn shape_of(span: u128) -> Shape {
    Shape::ALL[(span >> SHAPE_SHIFT) as usize & 3]
}

/// Deepest nesting a span records (deeper calls are recorded at this depth).
pub const MAX_DEPTH: u8 = 63;

const SHAPE_SHIFT: u32 = 14;

/// Longest duration a span can carry, in ticks (about 19 hours at 4 GHz); longer calls are
/// recorded with this duration.
pub const MAX_DURATION: u64 = (1 << 48) - 1;

impl Shape {
    /// The field list of this shape.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Shape::Acl => &["span", "addrs", "sizes", "call"],
            Shape::AclFault => &["span", "addrs", "sizes", "call", "fault"],
            Shape::Hccl => &["span", "addrs", "sizes", "call", "peer"],
            Shape::HcclFault => &["span", "addrs", "sizes", "call", "peer", "fault"],
        }
    }

    pub fn api(self) -> Api {
        match self {
            Shape::Acl | Shape::AclFault => Api::Acl,
            Shape::Hccl | Shape::HcclFault => Api::Hccl,
        }
    }

    pub const ALL: [Shape; 4] = [Shape::Acl, Shape::AclFault, Shape::Hccl, Shape::HcclFault];
}

fn hi(v: u128) -> u64 {
    (v >> 64) as u64
}

fn lo(v: u128) -> u64 {
    v as u64
}

fn pair(high: u64, low: u64) -> u128 {
    (high as u128) << 64 | low as u128
}

/// The event fields of `rec`, in the order of its shape's field list (unused slots are 0).
#[inline]
pub fn encode(rec: &Record) -> (Shape, [u128; MAX_FIELDS]) {
    let dur = rec.end.saturating_sub(rec.start).min(MAX_DURATION);
    let span = pair(
        rec.start,
        dur << 16 | (rec.depth.min(MAX_DEPTH) as u64) << 8 | rec.violations as u64,
    );
    let call = pair(
        rec.stream,
        (rec.kind as u32 as u64) << 32 | rec.ret as u32 as u64,
    );
    let peer = pair(
        rec.dispatcher,
        (rec.remote_rank as u64) << 32 | rec.link as u32 as u64,
    );
    let fault = pair(rec.fault as u64, rec.fault_arg);
    let head = [
        span,
        pair(rec.dst, rec.src),
        pair(rec.dest_max, rec.count),
        call,
    ];
    let [a, b, c, d] = head;
    match (rec.api(), rec.fault != 0) {
        (Api::Acl, false) => (Shape::Acl, [a, b, c, d, 0, 0]),
        (Api::Acl, true) => (Shape::AclFault, [a, b, c, d, fault, 0]),
        (Api::Hccl, false) => (Shape::Hccl, [a, b, c, d, peer, 0]),
        (Api::Hccl, true) => (Shape::HcclFault, [a, b, c, d, peer, fault]),
    }
}

/// Marks a ring record with the shape of the event it holds.
#[inline]
pub fn tag_shape(words: &mut [u128], shape: Shape) {
    if let Some(span) = words.first_mut() {
        *span = *span & !(3 << SHAPE_SHIFT) | (shape as u128) << SHAPE_SHIFT;
    }
}

/// The record a ring holds (its one or two units' words).
#[inline]
pub fn unpack(words: &[u128]) -> Record {
    let mut v: Packed = [0; MAX_FIELDS];
    let n = words.len().min(MAX_FIELDS);
    v[..n].copy_from_slice(&words[..n]);
    let shape = shape_of(v[0]);
    v[0] &= !(3 << SHAPE_SHIFT);
    decode(shape, &v)
}

/// The record an event of `shape` with field values `v` (by field index) stands for.
#[inline]
pub fn decode(shape: Shape, v: &Packed) -> Record {
    let (peer, fault) = match shape {
        Shape::Acl => (0, 0),
        Shape::AclFault => (0, v[4]),
        Shape::Hccl => (v[4], 0),
        Shape::HcclFault => (v[4], v[5]),
    };
    let start = hi(v[0]);
    Record {
        start,
        end: start.wrapping_add(lo(v[0]) >> 16),
        depth: (v[0] >> 8) as u8 & MAX_DEPTH,
        violations: v[0] as u8,
        dst: hi(v[1]),
        src: lo(v[1]),
        dest_max: hi(v[2]),
        count: lo(v[2]),
        stream: hi(v[3]),
        kind: (v[3] >> 32) as u32 as i32,
        ret: v[3] as u32 as i32,
        dispatcher: hi(peer),
        remote_rank: (peer >> 32) as u32,
        link: peer as u32 as i32,
        fault: hi(fault) as u8,
        fault_arg: lo(fault),
        api: shape.api() as u8,
    }
}

/// One `tracing` event named after the API, with the given fields.
macro_rules! call_event {
    ($name:literal, $v:expr, $($field:ident = $i:literal),*) => {
        tracing::event!(
            name: $name,
            target: "npushim::call",
            tracing::Level::INFO,
            span = $v[0],
            addrs = $v[1],
            sizes = $v[2],
            call = $v[3],
            $($field = $v[$i],)*
        )
    };
}

/// Emits the `tracing` event for one call; the active layer turns it into a record.
/// Inlined into the pipeline, so the record is never built in memory.
#[inline(always)]
pub fn emit(rec: &Record) {
    let (shape, v) = encode(rec);
    match shape {
        Shape::Acl => call_event!("aclrtMemcpyAsync", v,),
        Shape::AclFault => call_event!("aclrtMemcpyAsync", v, fault = 4),
        Shape::Hccl => call_event!("HcclMemcpyAsync", v, peer = 4),
        Shape::HcclFault => call_event!("HcclMemcpyAsync", v, peer = 4, fault = 5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_small() {
        assert!(std::mem::size_of::<Record>() <= 96);
    }

    proptest::proptest! {
        /// What the writer gets back from an event is exactly the call's record (a duration
        /// beyond 48 bits of ticks saturates).
        #[test]
        fn events_round_trip(
            words: [u64; 8],
            small: [u32; 4],
            tags: (u8, u8, u8, bool),
            dur in proptest::prop_oneof![0u64..10_000_000, proptest::num::u64::ANY],
        ) {
            let (depth, violations, fault, hccl) = tags;
            let rec = Record {
                start: words[0],
                end: words[0].wrapping_add(dur.min(MAX_DURATION)),
                dst: words[1],
                src: words[2],
                stream: words[3],
                dispatcher: if hccl { words[4] } else { 0 },
                dest_max: words[5],
                count: words[6],
                fault_arg: if fault % 5 != 0 { words[7] } else { 0 },
                kind: small[0] as i32,
                link: if hccl { small[1] as i32 } else { 0 },
                ret: small[2] as i32,
                remote_rank: if hccl { small[3] } else { 0 },
                api: if hccl { Api::Hccl as u8 } else { Api::Acl as u8 },
                depth,
                violations,
                fault: fault % 5,
            };
            if rec.end < rec.start {
                return Ok(());
            }
            let (shape, mut v) = encode(&rec);
            let rec = Record { depth: rec.depth.min(MAX_DEPTH), ..rec };
            proptest::prop_assert_eq!(decode(shape, &v), rec);
            // What the ring stores (the layer tags the record with its shape): one unit
            // for a plain ACL call, two otherwise.
            tag_shape(&mut v, shape);
            let units = units_of(v[0]) as usize;
            proptest::prop_assert_eq!(units, if shape == Shape::Acl { 1 } else { 2 });
            let mut ring_words = [0u128; 2 * UNIT_WORDS];
            ring_words[..MAX_FIELDS].copy_from_slice(&v);
            proptest::prop_assert_eq!(unpack(&ring_words[..units * UNIT_WORDS]), rec);
        }
    }

    #[test]
    fn long_calls_saturate() {
        let rec = Record {
            start: 5,
            end: u64::MAX,
            ..Record::default()
        };
        let (shape, v) = encode(&rec);
        assert_eq!(decode(shape, &v).end, 5 + MAX_DURATION);
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
