//! Chrome Trace Event JSON for records, written by hand into a reusable byte buffer.
//!
//! Runs on the writer thread only. One event per line; the first line opens the array with
//! `[`, every later one starts with `,`, so any prefix of whole lines plus `]` is valid JSON
//! (see docs/trace-format.md). No allocation per event: the writer gives the buffer its
//! capacity once and flushes it before it fills; should it ever need to grow, it grows
//! fallibly, and a failed growth is remembered ([`Json::failed`]), never an abort.

use crate::abi::types::{Api, Class, Hook, Kind, decode_kind, decode_link};
use crate::check::RuleSet;
use crate::decimal::{U64_DIGITS, two_digits, write_dec};

use super::clock::Calibration;
use super::record::{FLAG_EFFECTIVE_KIND, FLAG_SYNC, FaultTag, Record, mem_kind};

/// Where formatted bytes go: the writer's output buffer, or a stack line being built.
pub trait Out {
    fn put(&mut self, bytes: &[u8]);

    #[inline]
    fn raw(&mut self, s: &str) {
        self.put(s.as_bytes());
    }

    #[inline]
    fn u64(&mut self, v: u64) {
        let mut tmp = [0u8; U64_DIGITS];
        let n = write_dec(&mut tmp, v);
        self.put(&tmp[..n]);
    }

    #[inline]
    fn i64(&mut self, v: i64) {
        if v < 0 {
            self.put(b"-");
        }
        self.u64(v.unsigned_abs());
    }

    /// `"0x…"`, lower-case, no leading zeros.
    #[inline]
    fn hex(&mut self, v: u64) {
        let mut tmp = [0u8; 19];
        let n = write_hex(&mut tmp, v);
        self.put(&tmp[..n]);
    }

    /// Nanoseconds as microseconds with three decimals (exact, no float rounding).
    #[inline]
    fn micros(&mut self, ns: u64) {
        let mut tmp = [0u8; 24];
        let n = write_micros(&mut tmp, ns);
        self.put(&tmp[..n]);
    }
}

/// Two lower-case hex digits for every byte value.
const HEX2: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    t
};

/// Writes `"0x…"` (quotes included) at the start of `out` (at least 19 bytes).
#[inline]
fn write_hex(out: &mut [u8], mut v: u64) -> usize {
    let digits = (16 - (v | 1).leading_zeros() as usize / 4).max(1);
    let n = digits + 4;
    let text = &mut out[..n];
    text[..3].copy_from_slice(b"\"0x");
    text[n - 1] = b'"';
    let mut i = n - 1;
    while i >= 5 {
        i -= 2;
        text[i..i + 2].copy_from_slice(&HEX2[(v & 0xff) as usize]);
        v >>= 8;
    }
    if i == 4 {
        text[3] = HEX[(v & 15) as usize];
    }
    n
}

/// Writes nanoseconds as microseconds with three decimals at the start of `out` (at least
/// 24 bytes).
#[inline]
fn write_micros(out: &mut [u8], ns: u64) -> usize {
    let n = write_dec(out, ns / 1000);
    let frac = (ns % 1000) as usize;
    let tail = &mut out[n..n + 4];
    tail[0] = b'.';
    tail[1] = b'0' + (frac / 100) as u8;
    tail[2..4].copy_from_slice(&two_digits(frac % 100));
    n + 4
}

impl Out for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// One event line built on the stack, appended to the output with a single copy.
struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
}

/// No event line is longer (the longest, an HCCL span breaking every rule with a fault,
/// is about 600 bytes).
const LINE_MAX: usize = 1024;

impl Out for Line {
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }

    // Numbers are written in place (a line always has room for one more).
    #[inline(always)]
    fn u64(&mut self, v: u64) {
        self.len += write_dec(&mut self.buf[self.len..], v);
    }

    #[inline(always)]
    fn hex(&mut self, v: u64) {
        self.len += write_hex(&mut self.buf[self.len..], v);
    }

    #[inline(always)]
    fn micros(&mut self, ns: u64) {
        self.len += write_micros(&mut self.buf[self.len..], ns);
    }
}

/// The part of a thread's span lines that is the same for every call of one API, up to
/// `"ts":` (`{"ph":"X","name":…,"cat":…,"pid":P,"tid":T,"ts":`): formatted once per batch
/// of records, copied per span.
pub struct SpanPrefix {
    pid: u32,
    tid: i32,
    text: [u8; PREFIX_MAX],
    len: usize,
}

/// Longest prefix: two 11-digit ids and their keys.
const PREFIX_MAX: usize = 64;

impl SpanPrefix {
    /// `"pid":P,"tid":T,"ts":`, formatted once per thread batch.
    pub fn new(pid: u32, tid: i32) -> SpanPrefix {
        let mut line = Line {
            buf: [0; LINE_MAX],
            len: 0,
        };
        ids(&mut line, pid, tid);
        line.put(b",\"ts\":");
        let mut p = SpanPrefix {
            pid,
            tid,
            text: [0; PREFIX_MAX],
            len: line.len.min(PREFIX_MAX),
        };
        p.text[..p.len].copy_from_slice(&line.buf[..p.len]);
        p
    }

    #[inline]
    fn get(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

/// An output buffer with the few JSON primitives the trace needs.
pub struct Json {
    pub buf: Vec<u8>,
    /// Events written so far (decides between `[` and `,`).
    pub events: u64,
    /// Set when the buffer had to grow and could not: bytes were left out since.
    failed: bool,
    /// Scratch space for one span line, reused (so it is never zeroed per event).
    line: Line,
}

impl Default for Json {
    /// An empty buffer that grows as needed (fallibly).
    fn default() -> Self {
        Json {
            buf: Vec::new(),
            events: 0,
            failed: false,
            line: Line {
                buf: [0; LINE_MAX],
                len: 0,
            },
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes`, growing `buf` fallibly if it must; a failed growth sets `failed` and
/// leaves the bytes out.
#[inline]
fn append(buf: &mut Vec<u8>, failed: &mut bool, bytes: &[u8]) {
    if buf.capacity() - buf.len() < bytes.len() && buf.try_reserve(bytes.len()).is_err() {
        *failed = true;
        return;
    }
    buf.extend_from_slice(bytes);
}

impl Out for Json {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        append(&mut self.buf, &mut self.failed, bytes);
    }
}

impl Json {
    /// A buffer of exactly `n` bytes' capacity; `None` if that memory cannot be had.
    pub fn try_with_capacity(n: usize) -> Option<Json> {
        let mut j = Json::default();
        j.buf.try_reserve_exact(n).ok()?;
        Some(j)
    }

    /// True if some output was left out because the buffer could not grow: what the
    /// buffer holds after its last complete line must not be written.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// A JSON string with escaping.
    pub fn string(&mut self, s: &str) {
        self.put(b"\"");
        self.escaped(s);
        self.put(b"\"");
    }

    /// A JSON string from bytes that may not be UTF-8 (a thread's name): invalid sequences
    /// become U+FFFD, without a temporary copy.
    pub fn string_lossy(&mut self, bytes: &[u8]) {
        self.put(b"\"");
        for chunk in bytes.utf8_chunks() {
            self.escaped(chunk.valid());
            if !chunk.invalid().is_empty() {
                self.raw("\u{fffd}");
            }
        }
        self.put(b"\"");
    }

    fn escaped(&mut self, s: &str) {
        for c in s.chars() {
            match c {
                '"' => self.raw("\\\""),
                '\\' => self.raw("\\\\"),
                '\n' => self.raw("\\n"),
                '\r' => self.raw("\\r"),
                '\t' => self.raw("\\t"),
                c if (c as u32) < 0x20 => {
                    self.raw("\\u00");
                    self.put(&[HEX[(c as u32 >> 4) as usize], HEX[(c as u32 & 15) as usize]]);
                }
                c => {
                    let mut b = [0u8; 4];
                    self.raw(c.encode_utf8(&mut b));
                }
            }
        }
    }

    /// The byte that starts the next event line: `[` for the first, `,` after.
    #[inline]
    fn lead(&mut self) -> u8 {
        self.events += 1;
        if self.events == 1 { b'[' } else { b',' }
    }

    /// Starts an event line.
    #[inline]
    pub fn begin(&mut self) {
        let lead = self.lead();
        self.put(&[lead]);
    }

    #[inline]
    fn end(&mut self) {
        self.put(b"}\n");
    }

    /// A metadata event; `args` is already-serialised JSON object text.
    pub fn metadata(&mut self, name: &str, pid: u32, tid: i32, args: &str) {
        self.metadata_with(name, pid, tid, |j| j.raw(args));
    }

    /// A metadata event whose `args` object `args` writes in place (no temporary text).
    pub fn metadata_with(&mut self, name: &str, pid: u32, tid: i32, args: impl FnOnce(&mut Json)) {
        self.begin();
        self.raw("{\"ph\":\"M\",\"name\":");
        self.string(name);
        self.put(b",");
        ids(self, pid, tid);
        self.raw(",\"args\":");
        args(self);
        self.end();
    }

    /// The `X` event of one call, then its instant events (violations, fault): each line
    /// is built on the stack and appended with one copy.
    pub fn call(&mut self, rec: &Record, prefix: &SpanPrefix, clock: &Calibration) {
        let (pid, tid) = (prefix.pid, prefix.tid);
        let hook = rec.hook();
        let api = hook.api();
        let class = hook.class();
        let start_ns = clock.to_ns(rec.start);
        let end_ns = clock.to_ns(rec.end);
        let lead = self.lead();
        let l = &mut self.line;
        l.len = 0;
        l.put(&[lead]);
        l.put(b"{\"ph\":\"X\",\"name\":\"");
        l.raw(hook.symbol());
        l.put(b"\",\"cat\":\"");
        l.raw(api.category());
        l.put(b"\",");
        l.put(prefix.get());
        l.micros(start_ns);
        l.put(b",\"dur\":");
        l.micros(end_ns.saturating_sub(start_ns));
        l.put(b",\"args\":{");
        let hex = |l: &mut Line, key: &[u8], v: u64| {
            l.put(key);
            l.hex(v);
        };
        let dec = |l: &mut Line, key: &[u8], v: u64| {
            l.put(key);
            l.u64(v);
        };
        match (api, class) {
            (_, Class::AllocDevice | Class::AllocHost) => {
                hex(l, b"\"ptr\":", rec.dst);
                dec(l, b",\"size\":", rec.count);
                if class == Class::AllocDevice {
                    l.put(b",\"policy\":");
                    l.i64(rec.value as i64);
                }
            }
            (_, Class::Free | Class::Unregister) => hex(l, b"\"ptr\":", rec.dst),
            (_, Class::Register) => {
                hex(l, b"\"ptr\":", rec.dst);
                dec(l, b",\"size\":", rec.count);
                if hook == Hook::AclrtHostRegisterV2 {
                    dec(l, b",\"flag\":", rec.value as u32 as u64);
                } else {
                    l.put(b",\"type\":");
                    l.i64(rec.value as i64);
                }
            }
            (_, Class::Wait) => {
                match hook {
                    Hook::AclrtSynchronizeEvent => hex(l, b"\"event\":", rec.event),
                    Hook::AclrtSynchronizeDevice => l.put(b"\"device\":true"),
                    _ => hex(l, b"\"stream\":", rec.stream),
                }
                if hook == Hook::AclrtSynchronizeStreamWithTimeout {
                    l.put(b",\"timeout\":");
                    l.i64(rec.value as i64);
                }
            }
            (Api::Hccl, _) => {
                hex(l, b"\"dispatcher\":", rec.dispatcher);
                hex(l, b",\"dst\":", rec.dst);
                hex(l, b",\"src\":", rec.src);
                hex(l, b",\"stream\":", rec.stream);
                dec(l, b",\"destMax\":", rec.dest_max);
                dec(l, b",\"count\":", rec.count);
                if hook == Hook::HcclMemcpyAsync {
                    l.put(b",\"kind\":");
                    kind(l, decode_kind(api, rec.kind));
                }
                dec(l, b",\"remoteUserRank\":", rec.remote_rank as u64);
                l.put(b",\"linkType\":");
                kind(l, decode_link(rec.link));
            }
            (Api::Acl, Class::SetAsync) => {
                hex(l, b"\"devPtr\":", rec.dst);
                dec(l, b",\"maxCount\":", rec.dest_max);
                l.put(b",\"value\":");
                l.i64(rec.value as i64);
                dec(l, b",\"count\":", rec.count);
                hex(l, b",\"stream\":", rec.stream);
            }
            (Api::Acl, _) if class.is_2d() => {
                hex(l, b"\"dst\":", rec.dst);
                dec(l, b",\"dpitch\":", rec.dest_max);
                hex(l, b",\"src\":", rec.src);
                dec(l, b",\"spitch\":", rec.spitch);
                dec(l, b",\"width\":", rec.count);
                dec(l, b",\"height\":", rec.height);
                l.put(b",\"kind\":");
                kind(l, decode_kind(api, rec.kind));
                if class.is_async() {
                    hex(l, b",\"stream\":", rec.stream);
                }
            }
            (Api::Acl, _) => {
                hex(l, b"\"dst\":", rec.dst);
                hex(l, b",\"src\":", rec.src);
                if class.is_async() {
                    hex(l, b",\"stream\":", rec.stream);
                }
                dec(l, b",\"destMax\":", rec.dest_max);
                dec(l, b",\"count\":", rec.count);
                l.put(b",\"kind\":");
                kind(l, decode_kind(api, rec.kind));
            }
        }
        if let Some(src) = mem_kind(rec.mem & 0xf) {
            l.put(b",\"srcMem\":\"");
            l.raw(src.name());
            l.put(b"\"");
        }
        if let Some(dst) = mem_kind(rec.mem >> 4) {
            l.put(b",\"dstMem\":\"");
            l.raw(dst.name());
            l.put(b"\"");
        }
        if rec.flags & FLAG_EFFECTIVE_KIND != 0 {
            l.put(b",\"effectiveKind\":");
            kind(l, decode_kind(api, rec.effective_kind));
        }
        if rec.flags & FLAG_SYNC != 0 {
            l.put(b",\"sync\":true");
        }
        l.put(b",\"ret\":");
        l.i64(rec.ret as i64);
        let violations = RuleSet(rec.violations);
        if !violations.is_empty() {
            l.put(b",\"violations\":[");
            for (i, rule) in violations.iter().enumerate() {
                if i > 0 {
                    l.put(b",");
                }
                l.put(b"\"");
                l.raw(rule.name());
                l.put(b"\"");
            }
            l.put(b"]");
        }
        let fault = FaultTag::from_u8(rec.fault);
        let mut action = [0u8; 64];
        let mut action_len = 0;
        if fault != FaultTag::Off {
            action_len = fault.decision(rec.fault_arg).write_action(&mut action);
            l.put(b",\"fault\":\"");
            l.put(&action[..action_len]);
            l.put(b"\"");
        }
        if rec.depth > 0 {
            l.put(b",\"depth\":");
            l.u64(rec.depth as u64);
        }
        l.put(b"}}\n");
        append(&mut self.buf, &mut self.failed, &l.buf[..l.len]);

        for rule in violations.iter() {
            self.instant("violation:", rule.name(), hook, start_ns, pid, tid, None);
        }
        if fault != FaultTag::Off {
            let decision = fault.decision(rec.fault_arg);
            self.instant(
                "fault:",
                decision.task(),
                hook,
                start_ns,
                pid,
                tid,
                Some(&action[..action_len]),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn instant(
        &mut self,
        prefix: &str,
        what: &str,
        hook: Hook,
        start_ns: u64,
        pid: u32,
        tid: i32,
        action: Option<&[u8]>,
    ) {
        self.begin();
        self.raw("{\"ph\":\"i\",\"s\":\"t\",\"name\":\"");
        self.raw(prefix);
        self.raw(what);
        self.raw("\",\"cat\":\"");
        self.raw(hook.api().category());
        self.raw("\",");
        ids(self, pid, tid);
        self.raw(",\"ts\":");
        self.micros(start_ns);
        self.raw(",\"args\":{\"call\":\"");
        self.raw(hook.symbol());
        self.put(b"\"");
        if let Some(action) = action {
            self.raw(",\"action\":\"");
            self.put(action);
            self.put(b"\"");
        }
        self.put(b"}");
        self.end();
    }
}

/// `"pid":P,"tid":T`
#[inline]
fn ids(out: &mut impl Out, pid: u32, tid: i32) {
    out.put(b"\"pid\":");
    out.u64(pid as u64);
    out.put(b",\"tid\":");
    out.i64(tid as i64);
}

/// An enum's name in quotes, or its number.
#[inline]
fn kind(out: &mut impl Out, k: Kind) {
    match k {
        Kind::Named(n) => {
            out.put(b"\"");
            out.raw(n);
            out.put(b"\"");
        }
        Kind::Unknown(v) => out.i64(v as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks are nanoseconds when the TSC is not in use.
    const IDENTITY: Calibration = Calibration::IDENTITY;

    fn parse_lines(buf: &[u8]) -> Vec<serde_json::Value> {
        let mut text = String::from_utf8(buf.to_vec()).unwrap();
        text.push(']');
        serde_json::from_str::<Vec<serde_json::Value>>(&text).unwrap()
    }

    #[test]
    fn numbers() {
        let mut j = Json::default();
        j.u64(0);
        j.raw(" ");
        j.u64(u64::MAX);
        j.raw(" ");
        j.i64(i64::MIN);
        j.raw(" ");
        j.hex(0);
        j.hex(0xdead_beef);
        j.raw(" ");
        j.micros(1_234_567);
        j.raw(" ");
        j.micros(5);
        assert_eq!(
            String::from_utf8(j.buf).unwrap(),
            "0 18446744073709551615 -9223372036854775808 \"0x0\"\"0xdeadbeef\" 1234.567 0.005"
        );
    }

    proptest::proptest! {
        #[test]
        fn numbers_match_std_formatting(v: u64, shift in 0u32..64) {
            let v = v >> shift;
            for n in [v, v.wrapping_add(1), v.saturating_sub(1)] {
                let mut line = Line { buf: [0; LINE_MAX], len: 0 };
                line.u64(n);
                line.put(b" ");
                line.hex(n);
                line.put(b" ");
                line.micros(n);
                line.put(b" ");
                line.i64(n as i64);
                let want = format!(
                    "{n} \"{n:#x}\" {}.{:03} {}",
                    n / 1000,
                    n % 1000,
                    n as i64
                );
                proptest::prop_assert_eq!(std::str::from_utf8(&line.buf[..line.len]).unwrap(), want);
            }
        }
    }

    #[test]
    fn powers_of_ten_and_sixteen() {
        for i in 0..64 {
            for v in [
                1u64 << i,
                (1u64 << i) - 1,
                10u64.saturating_pow(i / 3),
                10u64.saturating_pow(i / 3) - 1,
            ] {
                let mut out = [0u8; 24];
                let n = write_hex(&mut out, v);
                assert_eq!(&out[..n], format!("\"{v:#x}\"").as_bytes());
            }
        }
    }

    #[test]
    fn acl_event_matches_the_spec() {
        let mut j = Json::default();
        j.metadata("process_name", 7, 7, "{\"name\":\"p\"}");
        let rec = Record {
            start: 1_000_500,
            end: 1_002_750,
            dst: 0x1000,
            src: 0x2040,
            stream: 0xabc,
            dest_max: 4096,
            count: 100,
            kind: 1,
            ret: 0,
            violations: RuleSet::EMPTY.with(crate::check::Rule::Align).0,
            depth: 1,
            ..Record::default()
        };
        j.call(&rec, &SpanPrefix::new(7, 8), &IDENTITY);
        let v = parse_lines(&j.buf);
        assert_eq!(v.len(), 3);
        let x = &v[1];
        assert_eq!(x["ph"], "X");
        assert_eq!(x["name"], "aclrtMemcpyAsync");
        assert_eq!(x["cat"], "acl");
        assert_eq!(x["tid"], 8);
        assert_eq!(x["ts"].as_f64().unwrap(), 1000.5);
        assert_eq!(x["dur"].as_f64().unwrap(), 2.25);
        assert_eq!(x["args"]["dst"], "0x1000");
        assert_eq!(x["args"]["src"], "0x2040");
        assert_eq!(x["args"]["kind"], "HOST_TO_DEVICE");
        assert_eq!(x["args"]["count"], 100);
        assert_eq!(x["args"]["violations"][0], "align");
        assert_eq!(x["args"]["depth"], 1);
        assert_eq!(v[2]["ph"], "i");
        assert_eq!(v[2]["name"], "violation:align");
    }

    #[test]
    fn hccl_event_with_fault_and_unknown_enums() {
        let mut j = Json::default();
        let (tag, arg) = FaultTag::of(crate::fault::Decision::Return(15));
        let rec = Record {
            hook: Hook::HcclMemcpyAsync as u8,
            dispatcher: 0x99,
            kind: 9,
            link: 300,
            remote_rank: 3,
            ret: 15,
            fault: tag as u8,
            fault_arg: arg,
            ..Record::default()
        };
        j.call(&rec, &SpanPrefix::new(1, 1), &IDENTITY);
        let v = parse_lines(&j.buf);
        let a = &v[0]["args"];
        assert_eq!(a["dispatcher"], "0x99");
        assert_eq!(a["kind"], 9);
        assert_eq!(a["linkType"], 300);
        assert_eq!(a["remoteUserRank"], 3);
        assert_eq!(a["fault"], "return(15)");
        assert!(a.get("depth").is_none());
        assert_eq!(v[1]["name"], "fault:return");
        assert_eq!(v[1]["args"]["action"], "return(15)");
    }

    #[test]
    fn strings_are_escaped() {
        let mut j = Json::default();
        j.string("a\"b\\c\nd\u{1}é");
        let s = String::from_utf8(j.buf).unwrap();
        assert_eq!(
            serde_json::from_str::<String>(&s).unwrap(),
            "a\"b\\c\nd\u{1}é"
        );
        let mut j = Json::default();
        j.string_lossy(b"w\xffx\"");
        let s = String::from_utf8(j.buf).unwrap();
        assert_eq!(serde_json::from_str::<String>(&s).unwrap(), "w\u{fffd}x\"");
    }

    #[test]
    fn a_buffer_is_had_or_refused_never_aborted_for() {
        let j = Json::try_with_capacity(4096).unwrap();
        assert!(j.buf.capacity() >= 4096 && !j.failed());
        assert!(Json::try_with_capacity(usize::MAX).is_none());
    }
}
