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
    /// CLOCK_MONOTONIC ns at entry and at return.
    pub start_ns: u64,
    pub end_ns: u64,
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

/// The fields of the `tracing` event each call emits, in declaration order; the layer
/// verifies a callsite against this table once and then decodes by index.
pub const FIELDS: [&str; 17] = [
    "api",
    "start_ns",
    "end_ns",
    "dst",
    "src",
    "stream",
    "dispatcher",
    "dest_max",
    "count",
    "kind",
    "link",
    "ret",
    "remote_rank",
    "depth",
    "violations",
    "fault",
    "fault_arg",
];

/// Stores field number `index` of [`FIELDS`] into `rec`.
#[inline]
pub fn set_field(rec: &mut Record, index: usize, v: u64) {
    match index {
        0 => rec.api = v as u8,
        1 => rec.start_ns = v,
        2 => rec.end_ns = v,
        3 => rec.dst = v,
        4 => rec.src = v,
        5 => rec.stream = v,
        6 => rec.dispatcher = v,
        7 => rec.dest_max = v,
        8 => rec.count = v,
        9 => rec.kind = v as i32,
        10 => rec.link = v as i32,
        11 => rec.ret = v as i32,
        12 => rec.remote_rank = v as u32,
        13 => rec.depth = v as u8,
        14 => rec.violations = v as u8,
        15 => rec.fault = v as u8,
        16 => rec.fault_arg = v,
        _ => {}
    }
}

/// One `tracing` event with the record's fields, named after the API (so sinks that show
/// event names, like `tracing-chrome`, label calls properly).
macro_rules! call_event {
    ($name:literal, $rec:expr) => {
        tracing::event!(
            name: $name,
            target: "npushim::call",
            tracing::Level::INFO,
            api = $rec.api as u64,
            start_ns = $rec.start_ns,
            end_ns = $rec.end_ns,
            dst = $rec.dst,
            src = $rec.src,
            stream = $rec.stream,
            dispatcher = $rec.dispatcher,
            dest_max = $rec.dest_max,
            count = $rec.count,
            kind = $rec.kind as i64,
            link = $rec.link as i64,
            ret = $rec.ret as i64,
            remote_rank = $rec.remote_rank as u64,
            depth = $rec.depth as u64,
            violations = $rec.violations as u64,
            fault = $rec.fault as u64,
            fault_arg = $rec.fault_arg,
        )
    };
}

/// Emits the `tracing` event for one call; the active layer turns it into a record.
#[inline]
pub fn emit(rec: &Record) {
    match rec.api() {
        Api::Acl => call_event!("aclrtMemcpyAsync", rec),
        Api::Hccl => call_event!("HcclMemcpyAsync", rec),
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
