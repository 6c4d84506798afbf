//! The `NPUSHIM_FAULTS` grammar (SPEC §6): a spec in, immutable rules out, or one error that
//! names the 1-based character column where the spec went wrong and what was expected there.
//! A spec is rejected whole; nothing here runs on the hot path.

use std::fmt;
use std::str::FromStr;

use super::{
    Action, DURATION_UNITS, FaultSpec, Filter, Key, MAX_ACTIONS, MAX_DELAY_NS, MAX_FILTERS,
    MAX_RULES, MAX_SPEC_BYTES, Op, Operand, Rule, SIZE_SUFFIXES, Target, Task, TaskKind,
};
use crate::abi::types::{Api, Hook, LINK_NAMES, code_by_name, kind_by_name, link_by_name};
use crate::words::or_list;

const TARGETS_EXPECTED: &str = "the name of a hooked function, e.g. aclrtMemcpyAsync, \
                                HcclD2DMemcpyAsync or aclrtSynchronizeStream, or *";
const CODE_EXPECTED: &str = "a number or a name such as ACL_ERROR_RT_INTERNAL_ERROR";

/// `off, return, delay, skip, abort`.
fn tasks_expected() -> String {
    TaskKind::NAMES.join(", ")
}

/// `kind, count, destMax, stream, rank, link or depth`.
fn keys_expected() -> String {
    or_list(&Key::NAMES)
}

/// `=, !=, <, <=, >, >=`.
fn ops_expected() -> String {
    Op::NAMES.join(", ")
}

/// `K, M, G, KiB, MiB or GiB`.
fn suffixes_expected() -> String {
    or_list(&SIZE_SUFFIXES.map(|(suffix, _)| suffix))
}

/// `ns, us, ms or s`.
fn units_expected() -> String {
    or_list(&DURATION_UNITS.map(|(unit, _)| unit))
}

/// A spec that does not parse: where, and what was expected there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// 1-based character (not byte) column in the spec string; `len + 1` means its end.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for SpecError {}

impl FromStr for FaultSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        if s.len() > MAX_SPEC_BYTES {
            return Err(SpecError {
                column: 1,
                message: format!(
                    "spec is {} bytes long; the limit is {MAX_SPEC_BYTES}",
                    s.len()
                ),
            });
        }
        Parser {
            chars: s.chars().collect(),
            pos: 0,
        }
        .spec()
    }
}

// Names are matched exactly, but a name token takes in any letters so that an error quotes
// all of a mistyped name (`réturn`), not just its ASCII head.
fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A token of a value or argument: a name or number, possibly signed or fractional, so that
/// an error can quote all of it.
fn is_value_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '.'
}

/// Parses an unsigned decimal or `0x` hexadecimal integer.
fn parse_uint(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether `s` is written as `parse_uint` expects (so a failed parse means overflow).
fn is_uint_text(s: &str) -> bool {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()),
        None => !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()),
    }
}

/// Parses an integer that may be negative, as `parse_uint`, into an `i32`.
fn parse_int32(s: &str) -> Option<i32> {
    match s.strip_prefix('-') {
        Some(rest) => {
            let magnitude = i64::try_from(parse_uint(rest)?).ok()?;
            i32::try_from(-magnitude).ok()
        }
        None => i32::try_from(parse_uint(s)?).ok(),
    }
}

/// Whether `s` looks like a number (so a failed parse means "out of range", not "a name").
fn looks_numeric(s: &str) -> bool {
    s.strip_prefix('-')
        .unwrap_or(s)
        .starts_with(|c: char| c.is_ascii_digit())
}
struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    /// Whether the text at the current position starts with `s`.
    fn looking_at(&self, s: &str) -> bool {
        s.chars()
            .enumerate()
            .all(|(i, c)| self.peek_at(i) == Some(c))
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Consumes characters while `pred` holds; returns where they started and the text.
    fn take_while(&mut self, pred: impl Fn(char) -> bool) -> (usize, String) {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        (start, self.chars[start..self.pos].iter().collect())
    }

    /// The current character, quoted, for "found …" in messages.
    fn found(&self) -> String {
        match self.peek() {
            Some(c) => format!("'{}'", c.escape_debug()),
            None => "end of spec".to_owned(),
        }
    }

    fn at_rule_end(&self) -> bool {
        matches!(self.peek(), None | Some(';'))
    }

    fn spec(&mut self) -> Result<FaultSpec, SpecError> {
        let mut rules = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => break,
                Some(';') => self.pos += 1,
                Some(_) => {
                    if rules.len() == MAX_RULES {
                        return Err(error(
                            self.pos,
                            format!("too many rules (the limit is {MAX_RULES})"),
                        ));
                    }
                    rules.push(self.rule(rules.len())?);
                }
            }
        }
        Ok(FaultSpec { rules })
    }

    /// One rule, up to and including its closing `;` if any.
    fn rule(&mut self, index: usize) -> Result<Rule, SpecError> {
        let target = self.target()?;
        self.skip_ws();
        let mut filters = Vec::new();
        if self.peek() == Some('[') {
            filters = self.filters(target)?;
            self.skip_ws();
            if self.peek() != Some('=') {
                return Err(error(
                    self.pos,
                    format!("expected '=' after the filters, found {}", self.found()),
                ));
            }
        } else if self.peek() != Some('=') {
            return Err(error(
                self.pos,
                format!(
                    "expected '=' or '[' after target '{}', found {}",
                    target.text(),
                    self.found()
                ),
            ));
        }
        self.pos += 1;
        let actions = self.actions(index)?;
        Ok(Rule {
            target,
            filters,
            actions,
        })
    }

    fn target(&mut self) -> Result<Target, SpecError> {
        if self.peek() == Some('*') {
            self.pos += 1;
            return Ok(Target::Any);
        }
        if !self.peek().is_some_and(is_ident_start) {
            return Err(error(
                self.pos,
                format!(
                    "expected a target ({TARGETS_EXPECTED}), found {}",
                    self.found()
                ),
            ));
        }
        let (start, name) = self.take_while(is_ident_char);
        match Hook::by_symbol(&name) {
            Some(hook) => Ok(Target::Only(hook)),
            None => Err(error(
                start,
                format!("unknown target '{name}' (expected {TARGETS_EXPECTED})"),
            )),
        }
    }

    /// `'[' filter (',' filter)* ']'`, starting at the `[`.
    fn filters(&mut self, target: Target) -> Result<Vec<Filter>, SpecError> {
        let open = self.pos;
        self.pos += 1;
        let mut filters = Vec::new();
        loop {
            self.skip_ws();
            if self.peek().is_none() {
                return Err(unterminated(open, '[', ']'));
            }
            if filters.len() == MAX_FILTERS {
                return Err(error(
                    self.pos,
                    format!("too many filters in one rule (the limit is {MAX_FILTERS})"),
                ));
            }
            filters.push(self.filter(target)?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(']') => {
                    self.pos += 1;
                    return Ok(filters);
                }
                None => return Err(unterminated(open, '[', ']')),
                Some(_) => {
                    return Err(error(
                        self.pos,
                        format!("expected ',' or ']' after a filter, found {}", self.found()),
                    ));
                }
            }
        }
    }

    fn filter(&mut self, target: Target) -> Result<Filter, SpecError> {
        if !self.peek().is_some_and(is_ident_start) {
            return Err(error(
                self.pos,
                format!(
                    "expected a filter key ({}), found {}",
                    keys_expected(),
                    self.found()
                ),
            ));
        }
        let (key_start, key_name) = self.take_while(is_ident_char);
        let Some(key) = Key::by_name(&key_name) else {
            return Err(error(
                key_start,
                format!(
                    "unknown filter key '{key_name}' (expected {})",
                    keys_expected()
                ),
            ));
        };
        if let Target::Only(hook) = target {
            if key.hccl_only() && hook.api() != Api::Hccl {
                return Err(error(
                    key_start,
                    format!(
                        "filter '{key_name}' never matches {} (it is an argument of the HCCL \
                         copies only)",
                        hook.symbol()
                    ),
                ));
            }
        }

        self.skip_ws();
        let op_start = self.pos;
        // The longest operator written here (`<=` rather than `<`).
        let Some(op) = Op::ALL
            .into_iter()
            .filter(|op| self.looking_at(op.name()))
            .max_by_key(|op| op.name().len())
        else {
            return Err(error(
                self.pos,
                format!(
                    "expected an operator ({}) after '{key_name}', found {}",
                    ops_expected(),
                    self.found()
                ),
            ));
        };
        if !key.ordered() && !matches!(op, Op::Eq | Op::Ne) {
            return Err(error(
                op_start,
                format!(
                    "filter '{key_name}' takes only = or !=, not '{}'",
                    op.name()
                ),
            ));
        }
        self.pos += op.name().len();

        self.skip_ws();
        let negative = self.peek() == Some('-');
        let value_start = self.pos;
        if negative {
            self.pos += 1;
        }
        let (_, body) = self.take_while(is_value_char);
        if body.is_empty() {
            self.pos = value_start;
            return Err(error(
                value_start,
                format!(
                    "expected a value after '{key_name}{}', found {}",
                    op.name(),
                    self.found()
                ),
            ));
        }
        let value = if negative { format!("-{body}") } else { body };
        let (operand, text) = match key {
            Key::Kind => kind_operand(target, &value).map_err(|m| error(value_start, m))?,
            Key::Link => link_operand(&value).map_err(|m| error(value_start, m))?,
            Key::Count | Key::DestMax => {
                let n = parse_size(key_name.as_str(), &value).map_err(|m| error(value_start, m))?;
                (Operand::Number(n), super::text::size_text(n))
            }
            Key::Stream | Key::Rank | Key::Depth => {
                // The largest value the call's field can hold: a filter beyond it could
                // never match.
                let limit = match key {
                    Key::Stream => usize::MAX as u64,
                    _ => u64::from(u32::MAX),
                };
                let Some(n) = parse_uint(&value) else {
                    if is_uint_text(&value) {
                        return Err(error(
                            value_start,
                            format!(
                                "'{value}' is too large for '{key_name}' (the limit is {limit})"
                            ),
                        ));
                    }
                    let what = if key == Key::Stream {
                        "an address"
                    } else {
                        "a number"
                    };
                    return Err(error(
                        value_start,
                        format!(
                            "expected {what} for '{key_name}' (decimal or 0x hex), found \
                             '{value}'"
                        ),
                    ));
                };
                if n > limit {
                    return Err(error(
                        value_start,
                        format!("'{value}' is too large for '{key_name}' (the limit is {limit})"),
                    ));
                }
                let text = if key == Key::Stream {
                    format!("{n:#x}")
                } else {
                    n.to_string()
                };
                (Operand::Number(n), text)
            }
        };
        Ok(Filter {
            key,
            op,
            operand,
            text,
        })
    }

    /// `action ('->' action)*`, up to and including the rule's closing `;` if any.
    fn actions(&mut self, rule: usize) -> Result<Vec<Action>, SpecError> {
        let mut actions = Vec::new();
        self.skip_ws();
        if self.at_rule_end() {
            return Err(error(
                self.pos,
                format!(
                    "empty action list after '=' (expected an action such as return, \
                     delay(1ms), skip, abort or off), found {}",
                    self.found()
                ),
            ));
        }
        loop {
            if actions.len() == MAX_ACTIONS {
                return Err(error(
                    self.pos,
                    format!("too many actions in one rule (the limit is {MAX_ACTIONS})"),
                ));
            }
            actions.push(self.action(rule, actions.len())?);
            self.skip_ws();
            match (self.peek(), self.peek_at(1)) {
                (None, _) => return Ok(actions),
                (Some(';'), _) => {
                    self.pos += 1;
                    return Ok(actions);
                }
                (Some('-'), Some('>')) => {
                    self.pos += 2;
                    self.skip_ws();
                    if self.at_rule_end() {
                        return Err(error(
                            self.pos,
                            format!("expected an action after '->', found {}", self.found()),
                        ));
                    }
                }
                _ => {
                    return Err(error(
                        self.pos,
                        format!("expected '->' or ';' after action, found {}", self.found()),
                    ));
                }
            }
        }
    }

    /// `[P '%'] [N '*'] task ['(' arg ')']`
    fn action(&mut self, rule: usize, index: usize) -> Result<Action, SpecError> {
        let is_number_char = |c: char| c.is_ascii_digit() || c == '.';
        let mut percent = None;
        let mut limit = None;
        if self.peek().is_some_and(is_number_char) {
            let (start, number) = self.take_while(is_number_char);
            self.skip_ws();
            match self.peek() {
                Some('%') => {
                    percent = Some(parse_percent(start, &number)?);
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek().is_some_and(is_number_char) {
                        let (start, number) = self.take_while(is_number_char);
                        self.skip_ws();
                        if self.peek() != Some('*') {
                            return Err(error(
                                self.pos,
                                format!(
                                    "expected '*' after the count '{number}', found {}",
                                    self.found()
                                ),
                            ));
                        }
                        limit = Some(parse_count(start, &number)?);
                        self.pos += 1;
                    }
                }
                Some('*') => {
                    limit = Some(parse_count(start, &number)?);
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek().is_some_and(is_number_char) {
                        let start = self.pos;
                        self.take_while(is_number_char);
                        self.skip_ws();
                        if self.peek() == Some('%') {
                            return Err(error(
                                start,
                                "the probability must come before the count, e.g. 50%2*return"
                                    .to_owned(),
                            ));
                        }
                        self.pos = start;
                    }
                }
                _ => {
                    return Err(error(
                        self.pos,
                        format!(
                            "expected '%' or '*' after the number '{number}', found {}",
                            self.found()
                        ),
                    ));
                }
            }
            self.skip_ws();
        }

        if !self.peek().is_some_and(is_ident_start) {
            return Err(error(
                self.pos,
                format!(
                    "expected a task ({}), found {}",
                    tasks_expected(),
                    self.found()
                ),
            ));
        }
        let (task_start, name) = self.take_while(is_ident_char);
        let Some(kind) = TaskKind::by_name(&name) else {
            return Err(error(
                task_start,
                format!("unknown task '{name}' (expected {})", tasks_expected()),
            ));
        };
        let after_name = self.pos;
        self.skip_ws();
        let arg = if self.peek() == Some('(') {
            Some(self.argument(kind)?)
        } else {
            None
        };
        let task = match (kind, arg) {
            (TaskKind::Off, _) => Task::Off,
            (TaskKind::Skip, _) => Task::Skip,
            (TaskKind::Abort, _) => Task::Abort,
            (TaskKind::Return, None) => Task::Return(None),
            (TaskKind::Return, Some((start, value))) => {
                Task::Return(Some(parse_code(&value).map_err(|m| error(start, m))?))
            }
            (TaskKind::Delay, Some((start, value))) => {
                Task::Delay(parse_duration(&value).map_err(|m| error(start, m))?)
            }
            (TaskKind::Delay, None) => {
                self.pos = after_name;
                return Err(error(
                    after_name,
                    format!(
                        "task 'delay' needs a duration in parentheses, e.g. delay(2ms), found {}",
                        self.found()
                    ),
                ));
            }
        };
        Ok(Action::new(rule, index, percent, limit, task))
    }

    /// `'(' arg ')'` after task `task`, starting at the `(`; returns the argument and where it
    /// starts. Interpreting it is left to the caller.
    fn argument(&mut self, kind: TaskKind) -> Result<(usize, String), SpecError> {
        let open = self.pos;
        let task = kind.name();
        if !kind.takes_argument() {
            return Err(error(open, format!("task '{task}' takes no argument")));
        }
        self.pos += 1;
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        self.take_while(is_value_char);
        let value: String = self.chars[start..self.pos].iter().collect();
        if value.is_empty() || value == "-" {
            self.pos = start;
            if self.peek().is_none() {
                return Err(unterminated(open, '(', ')'));
            }
            let expected = if kind == TaskKind::Delay {
                "a duration such as 500us or 2ms".to_owned()
            } else {
                format!("a code ({CODE_EXPECTED})")
            };
            return Err(error(
                start,
                format!("expected {expected} in {task}(), found {}", self.found()),
            ));
        }
        self.skip_ws();
        match self.peek() {
            Some(')') => {
                self.pos += 1;
                Ok((start, value))
            }
            None => Err(unterminated(open, '(', ')')),
            Some(_) => Err(error(
                self.pos,
                format!("expected ')' after the argument, found {}", self.found()),
            )),
        }
    }
}

fn error(pos: usize, message: String) -> SpecError {
    SpecError {
        column: pos + 1,
        message,
    }
}

fn unterminated(open: usize, opener: char, closer: char) -> SpecError {
    error(
        open,
        format!("unterminated '{opener}' (expected '{closer}' to close it)"),
    )
}

fn parse_percent(start: usize, number: &str) -> Result<f64, SpecError> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    let well_formed = !whole.is_empty()
        && !fraction.is_empty()
        && number.len() <= 24
        && whole.chars().all(|c| c.is_ascii_digit())
        && fraction.chars().all(|c| c.is_ascii_digit());
    let value = if well_formed {
        number.parse::<f64>().ok()
    } else {
        None
    };
    match value {
        None => Err(error(
            start,
            format!(
                "malformed probability '{number}%' (expected a decimal from 0 to 100, e.g. 5% \
                 or 0.5%)"
            ),
        )),
        Some(p) if p > 100.0 => Err(error(start, format!("probability {number}% is above 100%"))),
        Some(p) => Ok(p),
    }
}

fn parse_count(start: usize, number: &str) -> Result<u64, SpecError> {
    if !number.chars().all(|c| c.is_ascii_digit()) {
        return Err(error(
            start,
            format!("count '{number}' must be a whole number, e.g. 2*return"),
        ));
    }
    match number.parse::<u64>() {
        Ok(0) => Err(error(start, "count must be at least 1".to_owned())),
        Ok(n) => Ok(n),
        Err(_) => Err(error(
            start,
            format!("count '{number}' is too large (the limit is {})", u64::MAX),
        )),
    }
}

fn kind_operand(target: Target, value: &str) -> Result<(Operand, String), String> {
    if looks_numeric(value) {
        let Some(n) = parse_int32(value) else {
            return Err(format!(
                "kind '{value}' is not a 32-bit integer or a kind name"
            ));
        };
        return Ok((
            Operand::Kind {
                acl: Some(n),
                hccl: Some(n),
            },
            n.to_string(),
        ));
    }
    // A vendor prefix names the API; a bare name is looked up for every API the target has.
    let (bare, prefix_api) = if let Some(bare) = value.strip_prefix("ACL_MEMCPY_") {
        (bare, Some(Api::Acl))
    } else if let Some(bare) = value.strip_prefix("HCCL_RT_MEMCPY_KIND_") {
        (bare, Some(Api::Hccl))
    } else {
        (value, None)
    };
    let resolve = |api: Api| {
        if target.admits_api(api) && prefix_api.is_none_or(|p| p == api) {
            kind_by_name(api, bare)
        } else {
            None
        }
    };
    let (acl, hccl) = (resolve(Api::Acl), resolve(Api::Hccl));
    if acl.is_none() && hccl.is_none() {
        let expected = match target {
            Target::Only(h) if h.api() == Api::Acl => {
                "an aclrtMemcpyKind such as DEVICE_TO_HOST or ACL_MEMCPY_DEVICE_TO_HOST, or a \
                 number"
            }
            Target::Only(_) => {
                "an HcclRtMemcpyKind such as DEVICE_TO_HOST or \
                 HCCL_RT_MEMCPY_KIND_DEVICE_TO_HOST, or a number"
            }
            Target::Any => {
                "an aclrtMemcpyKind or HcclRtMemcpyKind name such as DEVICE_TO_HOST, or a number"
            }
        };
        let target_note = match target {
            Target::Only(hook) => format!(" for {}", hook.symbol()),
            Target::Any => String::new(),
        };
        return Err(format!(
            "unknown kind '{value}'{target_note} (expected {expected})"
        ));
    }
    // Keep the prefix only where it narrows the meaning, so `describe` parses back the same.
    let text = if target == Target::Any && prefix_api.is_some() {
        value
    } else {
        bare
    };
    Ok((Operand::Kind { acl, hccl }, text.to_owned()))
}

fn link_operand(value: &str) -> Result<(Operand, String), String> {
    if looks_numeric(value) {
        return match parse_int32(value) {
            Some(n) => Ok((Operand::Link(n), n.to_string())),
            None => Err(format!(
                "link '{value}' is not a 32-bit integer or a link type name"
            )),
        };
    }
    match link_by_name(value) {
        Some(n) => Ok((
            Operand::Link(n),
            value.strip_prefix("LINK_").unwrap_or(value).to_owned(),
        )),
        None => Err(format!(
            "unknown link type '{value}' (expected one of {}, RESERVED, with or without \
             LINK_, or a number)",
            LINK_NAMES.join(", ")
        )),
    }
}

/// A size for `count` / `destMax`: decimal or `0x` hex, then an optional binary suffix.
fn parse_size(key: &str, value: &str) -> Result<u64, String> {
    let digits_end = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => {
            2 + hex
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(hex.len())
        }
        None => value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    };
    let (number, suffix) = value.split_at(digits_end);
    let Some(n) = parse_uint(number) else {
        // Digits that do not parse can only mean overflow; "0x" alone is malformed.
        if !number.is_empty() && !number.eq_ignore_ascii_case("0x") {
            return Err(format!(
                "'{value}' is too large for '{key}' (the limit is {})",
                u64::MAX
            ));
        }
        return Err(format!(
            "expected a number for '{key}' (decimal or 0x hex, optionally followed by \
             {}), found '{value}'",
            suffixes_expected()
        ));
    };
    let scale: u64 = if suffix.is_empty() {
        1
    } else {
        match SIZE_SUFFIXES.iter().find(|(name, _)| *name == suffix) {
            Some(&(_, shift)) => 1 << shift,
            None => {
                return Err(format!(
                    "unknown size suffix '{suffix}' in '{value}' (expected {})",
                    suffixes_expected()
                ));
            }
        }
    };
    n.checked_mul(scale).ok_or_else(|| {
        format!(
            "'{value}' is too large for '{key}' (the limit is {})",
            u64::MAX
        )
    })
}

fn parse_code(value: &str) -> Result<i32, String> {
    if looks_numeric(value) {
        return parse_int32(value)
            .ok_or_else(|| format!("code '{value}' is not a 32-bit integer ({CODE_EXPECTED})"));
    }
    code_by_name(value)
        .ok_or_else(|| format!("unknown code name '{value}' (expected {CODE_EXPECTED})"))
}

fn parse_duration(value: &str) -> Result<u64, String> {
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "expected a duration such as 500us or 2ms, found '{value}'"
        ));
    }
    if unit.is_empty() {
        return Err(format!(
            "duration '{value}' needs a unit ({}), e.g. {value}ms",
            units_expected()
        ));
    }
    let Some(&(_, scale)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "unknown duration unit '{unit}' in '{value}' (expected {})",
            units_expected()
        ));
    };
    match number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
    {
        Some(ns) if ns <= MAX_DELAY_NS => Ok(ns),
        _ => Err(format!("delay {value} is above the 60s limit")),
    }
}
