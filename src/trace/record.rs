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
/// packing a natural pair: every field visit costs two dynamic calls in `tracing-core`, so
/// five fields instead of seventeen is most of the difference between a recorder that fits
/// the per-call budget and one that does not (measured with callgrind: see BENCHMARKS.md).
///
/// | field | type | layout |
/// |---|---|---|
/// | `time` | u128 | start tick (high 64 bits), end tick (low 64) |
/// | `addrs` | u128 | dst (high), src (low) |
/// | `sizes` | u128 | destMax (high), count (low) |
/// | `stream` | u64 | the stream argument |
/// | `call` | u128 | bits 0–7 api, 8–15 depth, 16–23 violations, 24–31 fault, 32–63 kind, 64–95 ret |
/// | `peer` | u128 | HCCL only: dispatcher (high), remoteUserRank (bits 32–63), linkType (bits 0–31) |
/// | `fault_arg` | u64 | only when a fault was injected: its code or delay |
///
/// There are four shapes of the call event: API × whether a fault was injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Acl = 0,
    AclFault = 1,
    Hccl = 2,
    HcclFault = 3,
}

impl Shape {
    /// The field list of this shape.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Shape::Acl => &["time", "addrs", "sizes", "stream", "call"],
            Shape::AclFault => &["time", "addrs", "sizes", "stream", "call", "fault_arg"],
            Shape::Hccl => &["time", "addrs", "sizes", "stream", "call", "peer"],
            Shape::HcclFault => &[
                "time",
                "addrs",
                "sizes",
                "stream",
                "call",
                "peer",
                "fault_arg",
            ],
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

/// Stores field number `index` of an event of `shape` into `rec`.
#[inline]
pub fn set_field(rec: &mut Record, shape: Shape, index: usize, v: u128) {
    match (index, shape) {
        (0, _) => (rec.start, rec.end) = (hi(v), lo(v)),
        (1, _) => (rec.dst, rec.src) = (hi(v), lo(v)),
        (2, _) => (rec.dest_max, rec.count) = (hi(v), lo(v)),
        (3, _) => rec.stream = lo(v),
        (4, _) => {
            rec.api = v as u8;
            rec.depth = (v >> 8) as u8;
            rec.violations = (v >> 16) as u8;
            rec.fault = (v >> 24) as u8;
            rec.kind = (v >> 32) as u32 as i32;
            rec.ret = (v >> 64) as u32 as i32;
        }
        (5, Shape::AclFault) | (6, Shape::HcclFault) => rec.fault_arg = lo(v),
        (5, Shape::Hccl | Shape::HcclFault) => {
            rec.dispatcher = hi(v);
            rec.remote_rank = (v >> 32) as u32;
            rec.link = v as u32 as i32;
        }
        _ => {}
    }
}

/// One `tracing` event of the given shape, named after the API.
macro_rules! call_event {
    ($name:literal, $rec:expr $(, $extra:ident = $value:expr)*) => {
        tracing::event!(
            name: $name,
            target: "npushim::call",
            tracing::Level::INFO,
            time = pair($rec.start, $rec.end),
            addrs = pair($rec.dst, $rec.src),
            sizes = pair($rec.dest_max, $rec.count),
            stream = $rec.stream,
            call = $rec.api as u128
                | ($rec.depth as u128) << 8
                | ($rec.violations as u128) << 16
                | ($rec.fault as u128) << 24
                | ($rec.kind as u32 as u128) << 32
                | ($rec.ret as u32 as u128) << 64,
            $($extra = $value,)*
        )
    };
}

/// Emits the `tracing` event for one call; the active layer turns it into a record.
#[inline]
pub fn emit(rec: &Record) {
    let peer = || {
        pair(
            rec.dispatcher,
            (rec.remote_rank as u64) << 32 | rec.link as u32 as u64,
        )
    };
    match (rec.api(), rec.fault != 0) {
        (Api::Acl, false) => call_event!("aclrtMemcpyAsync", rec),
        (Api::Acl, true) => call_event!("aclrtMemcpyAsync", rec, fault_arg = rec.fault_arg),
        (Api::Hccl, false) => call_event!("HcclMemcpyAsync", rec, peer = peer()),
        (Api::Hccl, true) => call_event!(
            "HcclMemcpyAsync",
            rec,
            peer = peer(),
            fault_arg = rec.fault_arg
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_small() {
        assert!(std::mem::size_of::<Record>() <= 96);
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
