//! Argument checks of SPEC §4: pure functions of a call's arguments and the configuration.
//!
//! Owns the rules table (names, classes, strict codes) and the `NPUSHIM_CHECK` grammar. Knows
//! nothing of FFI, globals or the environment, and never dereferences an address: a call is
//! judged on its integers alone.

use std::fmt;
use std::str::FromStr;

use crate::memmap::MemKind;
use crate::words::{or_list, word_enum};

use crate::abi::types::{
    ACL_ERROR_INVALID_PARAM, ACL_ERROR_RT_ADDR_UNALIGNED, ACL_ERROR_RT_FEATURE_NOT_SUPPORT,
    ACL_ERROR_RT_PARAM_INVALID, Api, Call, Class, HCCL_E_PARA, HCCL_E_PTR, Hook,
};

word_enum! {
    /// One rule of SPEC §4, with its name as used in `NPUSHIM_CHECK`, the trace and
    /// diagnostics. The order is the runtime's own order of checks for the error rules
    /// (strict mode returns the code of the first one broken), then the advice rules; a
    /// rule's discriminant is its bit in [`RuleSet`] and its index in per-rule tables.
    #[repr(u8)]
    pub enum Rule {
        Null = "null",
        Kind = "kind",
        Size = "size",
        Align = "align",
        Location = "location",
        H2h = "h2h",
        Bounds = "bounds",
        Freed = "freed",
        Overlap = "overlap",
        Link = "link",
        Direction = "direction",
        Pageable = "pageable",
    }
}

/// Every rule, in table order.
pub const RULES: [Rule; Rule::ALL.len()] = Rule::ALL;

/// Required alignment of `src` and `dst` for `aclrtMemcpyAsync` (seed document: all models).
pub const ALIGN: usize = 64;

impl Rule {
    /// Error rules block the call in strict mode; advice rules never do.
    pub const fn is_error(self) -> bool {
        !matches!(
            self,
            Rule::Overlap | Rule::Link | Rule::Direction | Rule::Pageable
        )
    }

    /// The code strict mode returns for a call of `api` that breaks this rule.
    pub const fn strict_code(self, api: Api) -> Option<i32> {
        match (self, api) {
            (Rule::Null, Api::Acl) | (Rule::Kind, Api::Acl) => Some(ACL_ERROR_INVALID_PARAM),
            (Rule::Size, Api::Acl) => Some(ACL_ERROR_RT_PARAM_INVALID),
            (Rule::Align, Api::Acl) => Some(ACL_ERROR_RT_ADDR_UNALIGNED),
            (Rule::H2h, Api::Acl) => Some(ACL_ERROR_RT_FEATURE_NOT_SUPPORT),
            (Rule::Location, Api::Acl) | (Rule::Bounds, Api::Acl) | (Rule::Freed, Api::Acl) => {
                Some(ACL_ERROR_RT_PARAM_INVALID)
            }
            (Rule::Null, Api::Hccl) | (Rule::Bounds, Api::Hccl) | (Rule::Freed, Api::Hccl) => {
                Some(HCCL_E_PTR)
            }
            (Rule::Kind, Api::Hccl) | (Rule::Size, Api::Hccl) => Some(HCCL_E_PARA),
            _ => None,
        }
    }

    /// The code strict mode returns for a call of `hook` that breaks this rule: the API's
    /// code (SPEC §4 table), except where the function's own check of that condition
    /// returns another. A 2D copy's `size` (width wider than a pitch) is checked by the ACL
    /// layer with its parameter checks (`ACL_ERROR_INVALID_PARAM`, open-source CANN
    /// `CheckMemcpy2dParam`, the simulated runtime alike), and `HcclD2DMemcpyAsync`
    /// answers `dst.size_ < src.size_` with `HCCL_E_PTR` (hcomm `dispatcher_common.cc`,
    /// SPEC §2.3) before it ever compares `count` with `destMax`.
    pub const fn strict_code_for(self, hook: Hook) -> Option<i32> {
        match (self, hook.class(), hook) {
            (Rule::Size, Class::Copy2dAsync | Class::Copy2dSync, _) => {
                Some(ACL_ERROR_INVALID_PARAM)
            }
            (Rule::Size, _, Hook::HcclD2DMemcpyAsync) => Some(HCCL_E_PTR),
            _ => self.strict_code(hook.api()),
        }
    }

    /// A one-line explanation for diagnostics about a call of `hook`.
    pub const fn explain_for(self, hook: Hook) -> &'static str {
        match (self, hook.class(), hook) {
            (Rule::Size, Class::Copy2dAsync | Class::Copy2dSync, _) => {
                "width exceeds dpitch or spitch"
            }
            (Rule::Size, Class::SetAsync, _) => "count exceeds maxCount",
            (Rule::Size, _, Hook::HcclD2DMemcpyAsync) => "dst.size_ is smaller than src.size_",
            (Rule::Null, Class::SetAsync, _) => "devPtr is NULL with count > 0",
            (Rule::Null, _, Hook::HcclD2DMemcpyAsync) => {
                "dispatcher, a DeviceMem's ptr_ or the stream reference is NULL"
            }
            (Rule::Kind, Class::Copy2dAsync | Class::Copy2dSync, _) => {
                "kind is not an aclrtMemcpyKind accepted by 2D copies (0-4)"
            }
            _ => self.explain(hook.api()),
        }
    }

    /// A one-line explanation for diagnostics.
    pub const fn explain(self, api: Api) -> &'static str {
        match (self, api) {
            (Rule::Null, Api::Acl) => "dst or src is NULL with count > 0",
            (Rule::Null, Api::Hccl) => "dispatcher, dst, src or the stream reference is NULL",
            (Rule::Kind, Api::Acl) => "kind is not an aclrtMemcpyKind accepted here (0-5)",
            (Rule::Kind, Api::Hccl) => "kind is not a HcclRtMemcpyKind accepted here (0-3)",
            (Rule::Size, _) => "count exceeds destMax",
            (Rule::Align, _) => "dst or src is not 64-byte aligned (required on all models)",
            (Rule::H2h, _) => "asynchronous host-to-host copy (not supported on 910B/910C)",
            (Rule::Overlap, _) => "source and destination ranges overlap",
            (Rule::Link, _) => "linkType is not a known hccl::LinkType",
            (Rule::Location, _) => {
                "the kind contradicts where the memory lives (the runtime rejects it with 107000)"
            }
            (Rule::Direction, _) => {
                "the kind contradicts where the memory lives; CANN 8.x corrects it silently, \
                 older runtimes return 107000"
            }
            (Rule::Pageable, _) => {
                "pageable host memory: the runtime synchronizes the stream and copies \
                 synchronously, so this asynchronous copy blocked the host; allocate the buffer \
                 with aclrtMallocHost or register it with aclrtHostRegister"
            }
            (Rule::Bounds, _) => "the copy runs past the end of its allocation",
            (Rule::Freed, _) => "dst or src lies in an allocation that was freed",
        }
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// A set of rules, as a bit mask in table order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleSet(pub u16);

impl RuleSet {
    pub const EMPTY: RuleSet = RuleSet(0);
    /// Every rule but `overlap`, which is opt-in (`+overlap`): overlapping copies are legal
    /// for some kinds and the check is pure advice.
    pub const DEFAULT: RuleSet = RuleSet(RuleSet::ALL.0 & !Rule::Overlap.bit());
    pub const ALL: RuleSet = RuleSet((1 << RULES.len()) - 1);
    /// The rules that need to know where memory lives (SPEC §9).
    pub const MEMORY: RuleSet = RuleSet(
        Rule::Location.bit()
            | Rule::Direction.bit()
            | Rule::Pageable.bit()
            | Rule::Bounds.bit()
            | Rule::Freed.bit(),
    );

    pub const fn contains(self, rule: Rule) -> bool {
        self.0 & rule.bit() != 0
    }

    pub const fn with(self, rule: Rule) -> RuleSet {
        RuleSet(self.0 | rule.bit())
    }

    pub const fn without(self, rule: Rule) -> RuleSet {
        RuleSet(self.0 & !rule.bit())
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The rules in the set, in table order.
    pub fn iter(self) -> impl Iterator<Item = Rule> {
        RULES.into_iter().filter(move |r| self.contains(*r))
    }
}

impl fmt::Display for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rule) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(rule.name())?;
        }
        Ok(())
    }
}

/// The rules one call breaks.
pub type Violations = RuleSet;

word_enum! {
    /// What happens to a call that breaks a rule.
    pub enum Mode {
        /// Nothing is checked.
        Off = "off",
        /// Violations are recorded and reported; the call is forwarded unchanged.
        Warn = "warn",
        /// A violated error rule returns its code without calling the real function.
        Strict = "strict",
    }
}

/// The parsed `NPUSHIM_CHECK` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    pub mode: Mode,
    pub rules: RuleSet,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            mode: Mode::Warn,
            rules: RuleSet::DEFAULT,
        }
    }
}

impl fmt::Display for CheckConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.mode.name())?;
        if self.mode != Mode::Off {
            write!(f, " ({})", self.rules)?;
        }
        Ok(())
    }
}

/// Why a `NPUSHIM_CHECK` value was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckConfigError(pub String);

impl fmt::Display for CheckConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (expected {}, optionally followed by rule toggles such as ',-align' or \
             ',+overlap'; rules: {})",
            self.0,
            or_list(&Mode::NAMES),
            Rule::NAMES.join(", ")
        )
    }
}

impl std::error::Error for CheckConfigError {}

impl FromStr for CheckConfig {
    type Err = CheckConfigError;

    /// `off` | `warn` | `strict`, then `,+rule` / `,-rule` toggles; a bare toggle list
    /// (`-align`) keeps the default mode.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut config = CheckConfig::default();
        for (i, word) in s.split(',').map(str::trim).enumerate() {
            let lower = word.to_ascii_lowercase();
            match (i, lower.as_str()) {
                (_, "") if s.trim().is_empty() => {}
                (0, w) if !w.starts_with(['+', '-']) => {
                    config.mode = Mode::by_name(w)
                        .ok_or_else(|| CheckConfigError(format!("unknown mode '{word}'")))?;
                }
                (_, w) if w.starts_with('+') || w.starts_with('-') => {
                    let rule = Rule::by_name(&w[1..]).ok_or_else(|| {
                        CheckConfigError(format!("unknown rule '{}'", &word[1..]))
                    })?;
                    config.rules = if w.starts_with('+') {
                        config.rules.with(rule)
                    } else {
                        config.rules.without(rule)
                    };
                }
                _ => {
                    return Err(CheckConfigError(format!(
                        "'{word}' is not a rule toggle (write +{word} or -{word})"
                    )));
                }
            }
        }
        Ok(config)
    }
}

/// `[a, a+n)` and `[b, b+n)` overlap (computed without overflow).
fn ranges_overlap(a: usize, b: usize, n: u64) -> bool {
    let (a, b, n) = (a as u128, b as u128, n as u128);
    a < b + n && b < a + n
}

/// The bytes a copy touches on one side: `count` for plain copies and sets, and for 2D
/// copies `pitch * (height - 1) + width` (SPEC §4), saturating.
pub fn extent(call: &Call, pitch: u64) -> u64 {
    if call.hook.class().is_2d() {
        if call.height == 0 {
            return 0;
        }
        pitch
            .saturating_mul(call.height - 1)
            .saturating_add(call.count)
    } else {
        call.count
    }
}

/// True for a call that breaks no rule except possibly `overlap`: the common case, decided
/// in a handful of instructions before the full rule walk.
#[inline(always)]
fn obviously_clean(call: &Call) -> bool {
    match (call.api, call.hook.class()) {
        (_, Class::Wait) => true,
        (_, class) if class.manages_memory() => true,
        (Api::Acl, Class::CopyAsync) => {
            call.count == 0
                || (call.dst != 0
                    && call.src != 0
                    && (call.dst | call.src).is_multiple_of(ALIGN)
                    && (1..=5).contains(&call.kind)
                    && call.count <= call.dest_max)
        }
        (Api::Acl, Class::CopySync) => {
            call.count == 0
                || (call.dst != 0
                    && call.src != 0
                    && (0..=5).contains(&call.kind)
                    && call.count <= call.dest_max)
        }
        (Api::Acl, _) => false,
        (Api::Hccl, _) => {
            call.dispatcher != 0
                && call.dst != 0
                && call.src != 0
                && call.stream != 0
                && !call.refs_null
                && (call.count == 0
                    || ((0..=3).contains(&call.kind)
                        && call.count <= call.dest_max
                        && ((0..=7).contains(&call.link) || call.link == 255)))
        }
    }
}

/// True if `call` certainly breaks none of `enabled` (false means: run [`check`]).
#[inline(always)]
pub fn clean_for(call: &Call, enabled: RuleSet) -> bool {
    !enabled.contains(Rule::Overlap) && obviously_clean(call)
}

/// The rules of `enabled` that `call` breaks (SPEC §4).
#[inline(always)]
pub fn check(call: &Call, enabled: RuleSet) -> Violations {
    if clean_for(call, enabled) {
        return RuleSet::EMPTY;
    }
    check_all(call, enabled)
}

/// Every rule, one by one.
#[inline(never)]
fn check_all(call: &Call, enabled: RuleSet) -> Violations {
    let mut v = RuleSet::EMPTY;
    let mut flag = |rule: Rule, broken: bool| {
        if broken && enabled.contains(rule) {
            v = v.with(rule);
        }
    };
    let class = call.hook.class();
    match (call.api, class) {
        (_, Class::Wait) => {}
        (_, class) if class.manages_memory() => {}
        (Api::Acl, Class::SetAsync) => {
            if call.count == 0 {
                return v;
            }
            flag(Rule::Null, call.dst == 0);
            flag(Rule::Size, call.count > call.dest_max);
        }
        (Api::Acl, _) => {
            let empty = if class.is_2d() {
                call.count == 0 || call.height == 0
            } else {
                call.count == 0
            };
            // The runtime returns success for a zero-byte copy before any other check.
            if empty {
                return v;
            }
            flag(Rule::Null, call.dst == 0 || call.src == 0);
            // 2D copies take kinds 0-4 only: HOST_TO_BUF_TO_DEVICE (5) is a 1D kind, and the
            // runtime rejects it there with ACL_ERROR_INVALID_PARAM.
            let kinds = if class.is_2d() { 0..=4 } else { 0..=5 };
            flag(Rule::Kind, !kinds.contains(&call.kind));
            if class.is_2d() {
                // A row wider than either pitch.
                flag(
                    Rule::Size,
                    call.count > call.dest_max || call.count > call.spitch,
                );
            } else {
                flag(Rule::Size, call.count > call.dest_max);
            }
            if class == Class::CopyAsync {
                flag(
                    Rule::Align,
                    !call.dst.is_multiple_of(ALIGN) || !call.src.is_multiple_of(ALIGN),
                );
            }
            if class.is_async() {
                flag(Rule::H2h, call.kind == 0);
            }
            let (dst_len, src_len) = (extent(call, call.dest_max), extent(call, call.spitch));
            flag(
                Rule::Overlap,
                call.src != call.dst && ranges_overlap2(call.src, src_len, call.dst, dst_len),
            );
        }
        (Api::Hccl, _) => {
            flag(
                Rule::Null,
                call.dispatcher == 0
                    || call.dst == 0
                    || call.src == 0
                    || call.stream == 0
                    || call.refs_null,
            );
            if call.count == 0 {
                return v;
            }
            flag(Rule::Kind, !(0..=3).contains(&call.kind));
            flag(Rule::Size, call.count > call.dest_max);
            flag(
                Rule::Overlap,
                call.src != call.dst && ranges_overlap(call.src, call.dst, call.count),
            );
            flag(
                Rule::Link,
                !((0..=7).contains(&call.link) || call.link == 255),
            );
        }
    }
    v
}

/// `[a, a+a_len)` and `[b, b+b_len)` overlap (computed without overflow).
fn ranges_overlap2(a: usize, a_len: u64, b: usize, b_len: u64) -> bool {
    let (a, b) = (a as u128, b as u128);
    a < b + b_len as u128 && b < a + a_len as u128
}

/// Where a copy's memory lives, as the memory map says (SPEC §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemView {
    pub src: MemKind,
    pub dst: MemKind,
    /// The live allocation around each pointer: (start, size).
    pub src_alloc: Option<(u64, u64)>,
    pub dst_alloc: Option<(u64, u64)>,
    /// The pointer lies in a freed allocation not reallocated since.
    pub src_freed: bool,
    pub dst_freed: bool,
}

impl MemView {
    pub const UNKNOWN: MemView = MemView {
        src: MemKind::Unknown,
        dst: MemKind::Unknown,
        src_alloc: None,
        dst_alloc: None,
        src_freed: false,
        dst_freed: false,
    };
}

/// Where one side of a copy lives, as the runtime's location/kind table sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Pinned or registered host memory.
    Host,
    Pageable,
    Device,
}

fn side(kind: MemKind) -> Option<Side> {
    match kind {
        MemKind::Pinned | MemKind::Registered => Some(Side::Host),
        MemKind::Pageable => Some(Side::Pageable),
        MemKind::Device => Some(Side::Device),
        MemKind::Unknown => None,
    }
}

const H2H: i32 = 0;
const H2D: i32 = 1;
const D2H: i32 = 2;
const D2D: i32 = 3;
const DEFAULT_KIND: i32 = 4;

/// What the runtime's location/kind table (SPEC §9) makes of a copy's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindVerdict {
    /// Both sides known, kind 0–4: the kind the runtime uses, and whether the passed one
    /// disagreed with a forced row (`direction`) or was rejected (`location`).
    Effective {
        kind: i32,
        direction: bool,
        location: bool,
    },
    /// A side is unknown, or the kind is not 0–4: the table does not apply.
    NotApplicable,
}

/// One row of the runtime's location/kind table (SPEC §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRow {
    /// Rows 1–4: the kind the runtime uses whatever is passed.
    pub forced: Option<i32>,
    /// Rows 5–9: what DEFAULT becomes.
    pub default: i32,
    /// Rows 5–9: the kinds used as passed (others are rejected with 107000).
    pub accepted: &'static [i32],
}

/// The row of the table for a copy between `view`'s two sides; `None` if a side is
/// unknown.
pub fn table_row(view: &MemView) -> Option<TableRow> {
    let (src, dst) = (side(view.src)?, side(view.dst)?);
    let forced = match (src, dst) {
        (Side::Host, Side::Device) => Some(H2D),
        (Side::Device, Side::Host) => Some(D2H),
        (Side::Host, Side::Host) => Some(H2H),
        (Side::Device, Side::Device) => Some(D2D),
        _ => None,
    };
    if let Some(kind) = forced {
        return Some(TableRow {
            forced,
            default: kind,
            accepted: &[],
        });
    }
    let (default, accepted): (i32, &'static [i32]) = match (src, dst) {
        (Side::Pageable, Side::Device) => (H2D, &[H2D, D2D]),
        (Side::Device, Side::Pageable) => (D2H, &[D2H, D2D]),
        (Side::Host, Side::Pageable) => (H2H, &[H2H, H2D]),
        (Side::Pageable, Side::Host) => (H2H, &[H2H, D2H]),
        _ => (H2H, &[H2H, H2D, D2H, D2D]),
    };
    Some(TableRow {
        forced: None,
        default,
        accepted,
    })
}

/// The location/kind table of SPEC §9 for an ACL copy of `kind` between `view`'s sides.
#[inline(always)]
pub fn kind_verdict(kind: i32, view: &MemView) -> KindVerdict {
    let Some(row) = table_row(view) else {
        return KindVerdict::NotApplicable;
    };
    if !(0..=4).contains(&kind) {
        return KindVerdict::NotApplicable;
    }
    if let Some(forced) = row.forced {
        return KindVerdict::Effective {
            kind: forced,
            direction: kind != forced && kind != DEFAULT_KIND,
            location: false,
        };
    }
    if kind == DEFAULT_KIND {
        return KindVerdict::Effective {
            kind: row.default,
            direction: false,
            location: false,
        };
    }
    KindVerdict::Effective {
        kind,
        direction: false,
        location: !row.accepted.contains(&kind),
    }
}

/// What [`check_with_memory`] finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemVerdict {
    pub violations: Violations,
    /// The kind the runtime uses, when it differs from the one passed.
    pub effective_kind: Option<i32>,
    /// The runtime turns this asynchronous copy into a synchronous one (pageable memory).
    pub sync: bool,
}

/// The rules of `enabled` that `call` breaks, knowing where its memory lives: the rules of
/// [`check`], with `h2h` judged on the effective kind, plus `location`, `direction`,
/// `pageable`, `bounds` and `freed` (SPEC §4, §9).
#[inline(always)]
pub fn check_with_memory(call: &Call, view: &MemView, enabled: RuleSet) -> MemVerdict {
    let mut v = check(call, enabled);
    let class = call.hook.class();
    let empty = call.count == 0 || (class.is_2d() && call.height == 0);
    let mut verdict = MemVerdict {
        violations: v,
        effective_kind: None,
        sync: false,
    };
    if empty || !class.moves_memory() {
        return verdict;
    }
    let flag = |v: &mut RuleSet, rule: Rule, broken: bool| {
        if broken && enabled.contains(rule) {
            *v = v.with(rule);
        }
    };
    let mut effective = None;
    let copies = call.api == Api::Acl && class != Class::SetAsync;
    if copies {
        if let KindVerdict::Effective {
            kind,
            direction,
            location,
        } = kind_verdict(call.kind, view)
        {
            effective = Some(kind);
            flag(&mut v, Rule::Location, location);
            flag(&mut v, Rule::Direction, direction);
            if class.is_async() {
                // The seed's rule is about the kind the runtime ends up with.
                v = v.without(Rule::H2h);
                flag(&mut v, Rule::H2h, kind == H2H);
                let pageable = view.src == MemKind::Pageable || view.dst == MemKind::Pageable;
                verdict.sync = (kind == H2D || kind == D2H) && pageable;
                flag(&mut v, Rule::Pageable, verdict.sync);
            }
        }
    }
    let dst_len = if class == Class::SetAsync {
        call.count
    } else {
        extent(call, call.dest_max)
    };
    let src_len = extent(call, call.spitch);
    let past = |ptr: usize, len: u64, alloc: Option<(u64, u64)>| {
        alloc.is_some_and(|(start, size)| {
            (ptr as u64).saturating_add(len) > start.saturating_add(size)
        })
    };
    let mut bounds = past(call.dst, dst_len, view.dst_alloc);
    let mut freed = view.dst_freed;
    if class != Class::SetAsync {
        bounds |= past(call.src, src_len, view.src_alloc);
        freed |= view.src_freed;
    }
    flag(&mut v, Rule::Bounds, bounds);
    flag(&mut v, Rule::Freed, freed);
    verdict.violations = v;
    verdict.effective_kind = effective.filter(|k| *k != call.kind);
    verdict
}

/// In strict mode: the first violated error rule (table order) of a call of `hook`, and the
/// code to return.
pub fn strict_verdict(hook: Hook, violations: Violations) -> Option<(Rule, i32)> {
    violations
        .iter()
        .filter(|r| r.is_error())
        .find_map(|r| r.strict_code_for(hook).map(|code| (r, code)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::types::Hook;
    use proptest::prelude::*;

    const BASE: usize = 0x7f00_0000_0000;

    fn acl(dst: usize, src: usize, dest_max: u64, count: u64, kind: i32) -> Call {
        Call {
            dst,
            src,
            dest_max,
            count,
            kind,
            stream: 0x1000,
            ..Call::new(Api::Acl)
        }
    }

    fn hccl(dst: usize, src: usize, dest_max: u64, count: u64, kind: i32, link: i32) -> Call {
        Call {
            dst,
            src,
            dest_max,
            count,
            kind,
            link,
            stream: 0x2000,
            dispatcher: 0x3000,
            remote_rank: 1,
            ..Call::new(Api::Hccl)
        }
    }

    fn names(v: Violations) -> Vec<&'static str> {
        v.iter().map(Rule::name).collect()
    }

    #[test]
    fn a_good_call_breaks_nothing() {
        let c = acl(BASE, BASE + 4096, 4096, 4096, 1);
        assert!(check(&c, RuleSet::ALL).is_empty());
        let h = hccl(BASE, BASE + 4096, 4096, 4096, 3, 1);
        assert!(check(&h, RuleSet::ALL).is_empty());
    }

    #[test]
    fn alignment_boundaries() {
        for (off, broken) in [(0, false), (63, true), (64, false), (65, true), (1, true)] {
            let c = acl(BASE + off, BASE + 8192, 4096, 64, 1);
            assert_eq!(
                check(&c, RuleSet::ALL).contains(Rule::Align),
                broken,
                "{off}"
            );
            let c = acl(BASE, BASE + 8192 + off, 4096, 64, 1);
            assert_eq!(
                check(&c, RuleSet::ALL).contains(Rule::Align),
                broken,
                "{off}"
            );
        }
        // HCCL has no alignment rule.
        let h = hccl(BASE + 1, BASE + 8193, 64, 64, 3, 1);
        assert!(!check(&h, RuleSet::ALL).contains(Rule::Align));
    }

    #[test]
    fn size_boundaries() {
        let ok = acl(BASE, BASE + 8192, 4096, 4096, 1);
        assert!(!check(&ok, RuleSet::ALL).contains(Rule::Size));
        let bad = acl(BASE, BASE + 8192, 4096, 4097, 1);
        assert!(check(&bad, RuleSet::ALL).contains(Rule::Size));
        let bad = hccl(BASE, BASE + 8192, 4096, 4097, 1, 1);
        assert_eq!(
            strict_verdict(Hook::HcclMemcpyAsync, check(&bad, RuleSet::ALL)),
            Some((Rule::Size, 1))
        );
        let huge = acl(BASE, BASE + 8192, u64::MAX - 1, u64::MAX, 1);
        assert!(check(&huge, RuleSet::ALL).contains(Rule::Size));
    }

    #[test]
    fn kind_boundaries() {
        for kind in [-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, i32::MAX, i32::MIN] {
            let c = acl(BASE, BASE + 8192, 64, 64, kind);
            assert_eq!(
                check(&c, RuleSet::ALL).contains(Rule::Kind),
                !(0..=5).contains(&kind),
                "acl {kind}"
            );
            let h = hccl(BASE, BASE + 8192, 64, 64, kind, 1);
            assert_eq!(
                check(&h, RuleSet::ALL).contains(Rule::Kind),
                !(0..=3).contains(&kind),
                "hccl {kind}"
            );
        }
        let h2h = acl(BASE, BASE + 8192, 64, 64, 0);
        assert_eq!(names(check(&h2h, RuleSet::ALL)), ["h2h"]);
    }

    #[test]
    fn zero_count_is_never_a_violation_but_hccl_null_still_applies() {
        let c = acl(0, 0, 0, 0, 99);
        assert!(check(&c, RuleSet::ALL).is_empty());
        let h = hccl(0, BASE, 0, 0, 99, 99);
        assert_eq!(names(check(&h, RuleSet::ALL)), ["null"]);
        let h = hccl(BASE, BASE + 64, 0, 0, 99, 99);
        assert!(check(&h, RuleSet::ALL).is_empty());
    }

    #[test]
    fn null_pointers() {
        let c = acl(0, BASE, 64, 64, 1);
        assert_eq!(
            strict_verdict(Hook::AclrtMemcpyAsync, check(&c, RuleSet::ALL)),
            Some((Rule::Null, 100_000))
        );
        let mut h = hccl(BASE, BASE + 64, 64, 64, 1, 1);
        h.stream = 0;
        assert_eq!(
            strict_verdict(Hook::HcclMemcpyAsync, check(&h, RuleSet::ALL)),
            Some((Rule::Null, 2))
        );
        h.stream = 1;
        h.dispatcher = 0;
        assert!(check(&h, RuleSet::ALL).contains(Rule::Null));
    }

    #[test]
    fn overlap_and_link_are_advice() {
        let c = acl(BASE, BASE + 64, 128, 128, 3);
        let v = check(&c, RuleSet::ALL);
        assert_eq!(names(v), ["overlap"]);
        assert_eq!(strict_verdict(Hook::AclrtMemcpyAsync, v), None);
        // src == dst is a no-op copy, not an overlap; adjacent ranges do not overlap.
        assert!(check(&acl(BASE, BASE, 128, 128, 3), RuleSet::ALL).is_empty());
        assert!(check(&acl(BASE, BASE + 128, 128, 128, 3), RuleSet::ALL).is_empty());
        // Overlap is opt-in.
        assert!(check(&c, RuleSet::DEFAULT).is_empty());
        for (link, broken) in [
            (0, false),
            (7, false),
            (8, true),
            (254, true),
            (255, false),
            (-1, true),
        ] {
            let h = hccl(BASE, BASE + 4096, 64, 64, 1, link);
            let v = check(&h, RuleSet::ALL);
            assert_eq!(v.contains(Rule::Link), broken, "{link}");
            assert_eq!(strict_verdict(Hook::HcclMemcpyAsync, v), None);
        }
    }

    #[test]
    fn strict_code_is_the_first_error_rule_in_table_order() {
        // NULL dst, bad kind, count > destMax, unaligned src: null wins.
        let c = acl(0, BASE + 1, 10, 20, 9);
        let v = check(&c, RuleSet::ALL);
        assert_eq!(names(v), ["null", "kind", "size", "align"]);
        assert_eq!(
            strict_verdict(Hook::AclrtMemcpyAsync, v),
            Some((Rule::Null, 100_000))
        );
        let v = check(&c, RuleSet::ALL.without(Rule::Null).without(Rule::Kind));
        assert_eq!(
            strict_verdict(Hook::AclrtMemcpyAsync, v),
            Some((Rule::Size, 107_000))
        );
        let c = acl(BASE + 1, BASE, 64, 64, 0);
        assert_eq!(
            strict_verdict(Hook::AclrtMemcpyAsync, check(&c, RuleSet::ALL)),
            Some((Rule::Align, 107_008))
        );
        let c = acl(BASE, BASE + 4096, 64, 64, 0);
        assert_eq!(
            strict_verdict(Hook::AclrtMemcpyAsync, check(&c, RuleSet::ALL)),
            Some((Rule::H2h, 207_000))
        );
    }

    #[test]
    fn strict_codes_follow_each_function_s_own_check() {
        // A row wider than its pitch: the ACL layer's parameter check, 100000.
        let wide = Call {
            dst: BASE,
            src: BASE + 8192,
            dest_max: 64,
            spitch: 256,
            count: 128,
            height: 8,
            kind: 3,
            stream: 0x1000,
            ..Call::of(Hook::AclrtMemcpy2dAsync)
        };
        let v = check(&wide, RuleSet::ALL);
        assert_eq!(names(v), ["size"]);
        assert_eq!(
            strict_verdict(wide.hook, v),
            Some((Rule::Size, ACL_ERROR_INVALID_PARAM))
        );
        let sync = Call {
            hook: Hook::AclrtMemcpy2d,
            ..wide
        };
        assert_eq!(
            strict_verdict(sync.hook, check(&sync, RuleSet::ALL)),
            Some((Rule::Size, ACL_ERROR_INVALID_PARAM))
        );
        // HOST_TO_BUF_TO_DEVICE is a 1D kind only.
        let kind5 = Call {
            dest_max: 256,
            kind: 5,
            ..wide
        };
        assert_eq!(names(check(&kind5, RuleSet::ALL)), ["kind"]);
        let one_d = acl(BASE, BASE + 8192, 256, 128, 5);
        assert!(check(&one_d, RuleSet::ALL).is_empty());
        // A memset past maxCount: the runtime's 107000.
        let set = Call {
            dst: BASE,
            dest_max: 256,
            count: 512,
            stream: 0x1000,
            ..Call::of(Hook::AclrtMemsetAsync)
        };
        assert_eq!(
            strict_verdict(set.hook, check(&set, RuleSet::ALL)),
            Some((Rule::Size, ACL_ERROR_RT_PARAM_INVALID))
        );
        // HcclD2DMemcpyAsync: dst.size_ < src.size_ is HCCL_E_PTR; HcclMemcpyAsync's
        // count > destMax stays HCCL_E_PARA.
        let small = Call {
            hook: Hook::HcclD2DMemcpyAsync,
            ..hccl(BASE, BASE + 8192, 256, 512, 3, 1)
        };
        assert_eq!(
            strict_verdict(small.hook, check(&small, RuleSet::ALL)),
            Some((Rule::Size, HCCL_E_PTR))
        );
        let seed = hccl(BASE, BASE + 8192, 256, 512, 3, 1);
        assert_eq!(
            strict_verdict(seed.hook, check(&seed, RuleSet::ALL)),
            Some((Rule::Size, HCCL_E_PARA))
        );
    }

    #[test]
    fn check_config_grammar() {
        let parse = |s: &str| s.parse::<CheckConfig>();
        assert_eq!(parse("").unwrap(), CheckConfig::default());
        assert_eq!(parse("off").unwrap().mode, Mode::Off);
        assert_eq!(parse("STRICT").unwrap().mode, Mode::Strict);
        let c = parse("strict,-align").unwrap();
        assert_eq!(c.mode, Mode::Strict);
        assert!(!c.rules.contains(Rule::Align));
        assert!(c.rules.contains(Rule::H2h));
        let c = parse("warn, +overlap").unwrap();
        assert!(c.rules.contains(Rule::Overlap));
        let c = parse("-h2h").unwrap();
        assert_eq!(c.mode, Mode::Warn);
        assert!(!c.rules.contains(Rule::H2h));
        let e = parse("strikt").unwrap_err().to_string();
        assert!(
            e.contains("unknown mode 'strikt'") && e.contains("off, warn or strict"),
            "{e}"
        );
        let e = parse("strict,-alignment").unwrap_err().to_string();
        assert!(e.contains("unknown rule 'alignment'"), "{e}");
        let e = parse("strict,align").unwrap_err().to_string();
        assert!(e.contains("+align"), "{e}");
    }

    /// An independent model of the rules table, written from SPEC §4 directly.
    fn model_strict(c: &Call) -> Option<i32> {
        match c.api {
            Api::Acl => {
                if c.count == 0 {
                    None
                } else if c.dst == 0 || c.src == 0 || c.kind < 0 || c.kind > 5 {
                    Some(100_000)
                } else if c.count > c.dest_max {
                    Some(107_000)
                } else if !c.dst.is_multiple_of(64) || !c.src.is_multiple_of(64) {
                    Some(107_008)
                } else if c.kind == 0 {
                    Some(207_000)
                } else {
                    None
                }
            }
            Api::Hccl => {
                if c.dispatcher == 0 || c.dst == 0 || c.src == 0 || c.stream == 0 {
                    Some(2)
                } else if c.count == 0 {
                    None
                } else if c.kind < 0 || c.kind > 3 || c.count > c.dest_max {
                    Some(1)
                } else {
                    None
                }
            }
        }
    }

    fn arb_addr() -> impl Strategy<Value = usize> {
        prop_oneof![
            Just(0usize),
            (0usize..1 << 20).prop_map(|o| BASE + o),
            (0usize..1 << 14).prop_map(|o| BASE + o * 64),
            any::<usize>(),
        ]
    }

    fn arb_size() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), 0u64..8192, any::<u64>(), Just(u64::MAX)]
    }

    fn arb_call() -> impl Strategy<Value = Call> {
        (
            0..Hook::ALL.len(),
            arb_addr(),
            arb_addr(),
            arb_size(),
            arb_size(),
            prop_oneof![-2i32..10, any::<i32>()],
            arb_addr(),
            arb_addr(),
            prop_oneof![-2i32..10, Just(255), any::<i32>()],
        )
            .prop_map(
                |(hook, dst, src, dest_max, count, kind, stream, disp, link)| {
                    let hook = Hook::ALL[hook];
                    let hccl = hook.api() == Api::Hccl;
                    Call {
                        dst,
                        src,
                        dest_max,
                        count,
                        kind,
                        stream,
                        dispatcher: if hccl { disp } else { 0 },
                        link,
                        spitch: dest_max / 2,
                        height: count % 7,
                        ..Call::of(hook)
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn the_fast_path_agrees_with_every_rule(c in arb_call(), bits in 0u16..0x80) {
            let rules = RuleSet(bits);
            prop_assert_eq!(check(&c, rules), check_all(&c, rules));
        }

        #[test]
        fn strict_outcome_matches_the_model(c in arb_call()) {
            // The model is that of the two seed functions.
            let c = Call { hook: Call::new(c.api).hook, refs_null: false, ..c };
            let verdict = strict_verdict(c.hook, check(&c, RuleSet::ALL)).map(|(_, code)| code);
            prop_assert_eq!(verdict, model_strict(&c));
        }
    }
}
