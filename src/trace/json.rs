//! Chrome Trace Event JSON for records, written by hand into a reusable byte buffer.
//!
//! Runs on the writer thread only. One event per line; the first line opens the array with
//! `[`, every later one starts with `,`, so any prefix of whole lines plus `]` is valid JSON
//! (see docs/trace-format.md). No allocation per event beyond the buffer's growth.

use crate::abi::types::{Api, Kind, decode_kind, decode_link};
use crate::check::RuleSet;

use super::clock::Calibration;
use super::record::{FaultTag, Record};

/// Where formatted bytes go: the writer's output buffer, or a stack line being built.
pub trait Out {
    fn put(&mut self, bytes: &[u8]);

    #[inline]
    fn raw(&mut self, s: &str) {
        self.put(s.as_bytes());
    }

    #[inline]
    fn u64(&mut self, v: u64) {
        self.put(itoa::Buffer::new().format(v).as_bytes());
    }

    #[inline]
    fn i64(&mut self, v: i64) {
        self.put(itoa::Buffer::new().format(v).as_bytes());
    }

    /// `"0x…"`, lower-case, no leading zeros.
    #[inline]
    fn hex(&mut self, v: u64) {
        let mut tmp = [0u8; 19];
        let digits = (16 - (v | 1).leading_zeros() as usize / 4).max(1);
        tmp[0] = b'"';
        tmp[1] = b'0';
        tmp[2] = b'x';
        for i in 0..digits {
            tmp[2 + digits - i] = HEX[((v >> (4 * i)) & 15) as usize];
        }
        tmp[3 + digits] = b'"';
        self.put(&tmp[..4 + digits]);
    }

    /// Nanoseconds as microseconds with three decimals (exact, no float rounding).
    #[inline]
    fn micros(&mut self, ns: u64) {
        self.u64(ns / 1000);
        let frac = ns % 1000;
        self.put(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
    }
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
}

/// An output buffer with the few JSON primitives the trace needs.
pub struct Json {
    pub buf: Vec<u8>,
    /// Events written so far (decides between `[` and `,`).
    pub events: u64,
    /// Scratch space for one span line, reused (so it is never zeroed per event).
    line: Box<Line>,
}

impl Default for Json {
    fn default() -> Self {
        Json::with_capacity(0)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Out for Json {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
}

impl Json {
    pub fn with_capacity(n: usize) -> Json {
        Json {
            buf: Vec::with_capacity(n),
            events: 0,
            line: Box::new(Line {
                buf: [0; LINE_MAX],
                len: 0,
            }),
        }
    }

    /// A JSON string with escaping.
    pub fn string(&mut self, s: &str) {
        self.buf.push(b'"');
        for c in s.chars() {
            match c {
                '"' => self.raw("\\\""),
                '\\' => self.raw("\\\\"),
                '\n' => self.raw("\\n"),
                '\r' => self.raw("\\r"),
                '\t' => self.raw("\\t"),
                c if (c as u32) < 0x20 => {
                    self.raw("\\u00");
                    self.buf.push(HEX[(c as u32 >> 4) as usize]);
                    self.buf.push(HEX[(c as u32 & 15) as usize]);
                }
                c => {
                    let mut b = [0u8; 4];
                    self.raw(c.encode_utf8(&mut b));
                }
            }
        }
        self.buf.push(b'"');
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
        self.buf.push(lead);
    }

    #[inline]
    fn end(&mut self) {
        self.buf.extend_from_slice(b"}\n");
    }

    /// A metadata event; `args` is already-serialised JSON object text.
    pub fn metadata(&mut self, name: &str, pid: u32, tid: i32, args: &str) {
        self.begin();
        self.raw("{\"ph\":\"M\",\"name\":");
        self.string(name);
        self.buf.push(b',');
        ids(self, pid, tid);
        self.raw(",\"args\":");
        self.raw(args);
        self.end();
    }

    /// The `X` event of one call, then its instant events (violations, fault): each line
    /// is built on the stack and appended with one copy.
    pub fn call(&mut self, rec: &Record, pid: u32, tid: i32, clock: &Calibration) {
        let api = rec.api();
        let start_ns = clock.to_ns(rec.start);
        let end_ns = clock.to_ns(rec.end);
        let lead = self.lead();
        let l = &mut *self.line;
        l.len = 0;
        l.put(&[lead]);
        l.put(match api {
            Api::Acl => b"{\"ph\":\"X\",\"name\":\"aclrtMemcpyAsync\",\"cat\":\"acl\",",
            Api::Hccl => b"{\"ph\":\"X\",\"name\":\"HcclMemcpyAsync\",\"cat\":\"hccl\",",
        });
        ids(l, pid, tid);
        l.put(b",\"ts\":");
        l.micros(start_ns);
        l.put(b",\"dur\":");
        l.micros(end_ns.saturating_sub(start_ns));
        l.put(b",\"args\":{");
        if api == Api::Hccl {
            l.put(b"\"dispatcher\":");
            l.hex(rec.dispatcher);
            l.put(b",");
        }
        l.put(b"\"dst\":");
        l.hex(rec.dst);
        l.put(b",\"src\":");
        l.hex(rec.src);
        l.put(b",\"stream\":");
        l.hex(rec.stream);
        l.put(b",\"destMax\":");
        l.u64(rec.dest_max);
        l.put(b",\"count\":");
        l.u64(rec.count);
        l.put(b",\"kind\":");
        kind(l, decode_kind(api, rec.kind));
        if api == Api::Hccl {
            l.put(b",\"remoteUserRank\":");
            l.u64(rec.remote_rank as u64);
            l.put(b",\"linkType\":");
            kind(l, decode_link(rec.link));
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
        if fault != FaultTag::None {
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
        self.buf.extend_from_slice(&l.buf[..l.len]);

        for rule in violations.iter() {
            self.instant("violation:", rule.name(), api, start_ns, pid, tid, None);
        }
        if fault != FaultTag::None {
            let decision = fault.decision(rec.fault_arg);
            self.instant(
                "fault:",
                decision.task(),
                api,
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
        api: Api,
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
        self.raw(api.category());
        self.raw("\",");
        ids(self, pid, tid);
        self.raw(",\"ts\":");
        self.micros(start_ns);
        self.raw(",\"args\":{\"call\":\"");
        self.raw(api.symbol());
        self.buf.push(b'"');
        if let Some(action) = action {
            self.raw(",\"action\":\"");
            self.buf.extend_from_slice(action);
            self.buf.push(b'"');
        }
        self.buf.push(b'}');
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
            api: Api::Acl as u8,
            violations: RuleSet::EMPTY.with(crate::check::Rule::Align).0,
            depth: 1,
            ..Record::default()
        };
        j.call(&rec, 7, 8, &IDENTITY);
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
            api: Api::Hccl as u8,
            dispatcher: 0x99,
            kind: 9,
            link: 300,
            remote_rank: 3,
            ret: 15,
            fault: tag as u8,
            fault_arg: arg,
            ..Record::default()
        };
        j.call(&rec, 1, 1, &IDENTITY);
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
    }
}
