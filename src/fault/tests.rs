//! The fault module as a whole, through its public path: a spec parsed, calls decided,
//! decisions and rules written back as text.

use super::*;

fn parse(s: &str) -> FaultSpec {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

fn parse_err(s: &str) -> String {
    match s.parse::<FaultSpec>() {
        Ok(spec) => panic!("{s:?} should not parse, got {}", spec.describe()),
        Err(e) => e.to_string(),
    }
}

fn acl(kind: i32) -> Call {
    Call {
        kind,
        ..Call::new(Api::Acl)
    }
}

fn hccl(kind: i32) -> Call {
    Call {
        kind,
        ..Call::new(Api::Hccl)
    }
}

/// Whether the spec's first rule matches `call` (each rule here is `…=return(1)`).
fn selects(spec: &str, call: Call) -> bool {
    parse(spec).decide(&call, 0) == Decision::Return(1)
}

#[test]
fn spec_example_fails_third_and_fourth_device_to_host_copy() {
    let spec = parse("aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=2*off->2*return(507053)->off");
    assert_eq!(spec.rule_count(), 1);
    let d2h = acl(2);
    let h2d = acl(1);
    let mut seen = Vec::new();
    for _ in 0..8 {
        // Interleaved H2D calls and HCCL D2H calls must not consume anything.
        assert_eq!(spec.decide(&h2d, 7), Decision::Forward);
        assert_eq!(spec.decide(&hccl(2), 7), Decision::Forward);
        seen.push(spec.decide(&d2h, 7));
    }
    use Decision::{Forward as F, Return as R};
    assert_eq!(seen, [F, F, R(507053), R(507053), F, F, F, F]);
}

#[test]
fn empty_specs() {
    for s in ["", "   ", "\t\n", ";", " ; ;; ", ";;;"] {
        let spec = parse(s);
        assert!(spec.is_empty(), "{s:?}");
        assert_eq!(spec.rule_count(), 0);
        assert_eq!(spec.describe(), "");
        assert_eq!(spec.decide(&acl(1), 0), Decision::Forward);
    }
    assert!(FaultSpec::default().is_empty());
}

#[test]
fn rules_targets_and_whitespace() {
    let spec = parse(" aclrtMemcpyAsync = return(1) ; HcclMemcpyAsync=return(2);*=return(3);");
    assert_eq!(spec.rule_count(), 3);
    assert_eq!(spec.decide(&acl(0), 0), Decision::Return(1));
    assert_eq!(spec.decide(&hccl(0), 0), Decision::Return(2));
    let spec = parse("*=return(3);aclrtMemcpyAsync=return(1)");
    assert_eq!(spec.decide(&acl(0), 0), Decision::Return(3));
    assert_eq!(spec.decide(&hccl(0), 0), Decision::Return(3));
    let spec = parse(
        "aclrtMemcpyAsync [ kind = DEVICE_TO_HOST , count >= 1M ] = 50 % 2 * return ( 7 ) -> skip",
    );
    assert_eq!(
        spec.describe(),
        "aclrtMemcpyAsync[kind=DEVICE_TO_HOST,count>=1M]=50%2*return(7)->skip"
    );
}

#[test]
fn first_matching_rule_decides_even_when_its_actions_pass() {
    let spec = parse("aclrtMemcpyAsync[kind=1]=1*skip; aclrtMemcpyAsync=return");
    assert_eq!(spec.decide(&acl(1), 0), Decision::Skip);
    // The first rule still matches, so its spent action forwards; rule 2 is not tried.
    assert_eq!(spec.decide(&acl(1), 0), Decision::Forward);
    assert_eq!(spec.decide(&acl(2), 0), Decision::Return(507_000));
}

#[test]
fn tasks_and_arguments() {
    let d = |s: &str, call: Call| parse(s).decide(&call, 0);
    assert_eq!(d("*=off", acl(0)), Decision::Forward);
    assert_eq!(d("*=skip", acl(0)), Decision::Skip);
    assert_eq!(d("*=abort", hccl(0)), Decision::Abort);
    assert_eq!(d("*=return", acl(0)), Decision::Return(507_000));
    assert_eq!(d("*=return", hccl(0)), Decision::Return(15));
    assert_eq!(d("HcclMemcpyAsync=return", hccl(0)), Decision::Return(15));
    assert_eq!(d("*=return(-1)", acl(0)), Decision::Return(-1));
    assert_eq!(
        d("*=return(-2147483648)", acl(0)),
        Decision::Return(i32::MIN)
    );
    assert_eq!(d("*=return(0x10)", acl(0)), Decision::Return(16));
    assert_eq!(
        d("*=return(ACL_ERROR_RT_DEVICE_MEM_ERROR)", hccl(0)),
        Decision::Return(507_053)
    );
    assert_eq!(d("*=return(HCCL_E_PARA)", hccl(0)), Decision::Return(1));
    assert_eq!(d("*=return(ACL_SUCCESS)", acl(0)), Decision::Return(0));
    assert_eq!(d("*=delay(500us)", acl(0)), Decision::Delay(500_000));
    assert_eq!(d("*=delay(7ns)", acl(0)), Decision::Delay(7));
    assert_eq!(d("*=delay(2ms)", acl(0)), Decision::Delay(2_000_000));
    assert_eq!(d("*=delay(60s)", acl(0)), Decision::Delay(MAX_DELAY_NS));
    assert_eq!(d("*=delay(0ms)", acl(0)), Decision::Delay(0));
    // An `off` that fires consumes its count and forwards.
    let spec = parse("*=1*off->return(9)");
    assert_eq!(spec.decide(&acl(0), 0), Decision::Forward);
    assert_eq!(spec.decide(&acl(0), 0), Decision::Return(9));
    assert_eq!(spec.decide(&acl(0), 0), Decision::Return(9));
    // All actions spent: forward.
    let spec = parse("*=1*skip->1*abort");
    assert_eq!(spec.decide(&acl(0), 0), Decision::Skip);
    assert_eq!(spec.decide(&acl(0), 0), Decision::Abort);
    assert_eq!(spec.decide(&acl(0), 0), Decision::Forward);
}

#[test]
fn decision_text() {
    let cases = [
        (Decision::Forward, "off", "off", false),
        (Decision::Return(507_053), "return(507053)", "return", true),
        (Decision::Return(-3), "return(-3)", "return", true),
        (
            Decision::Return(i32::MIN),
            "return(-2147483648)",
            "return",
            true,
        ),
        (Decision::Delay(2_000_000), "delay(2ms)", "delay", true),
        (Decision::Delay(1_500), "delay(1500ns)", "delay", true),
        (Decision::Delay(3_000_000_000), "delay(3s)", "delay", true),
        (Decision::Delay(0), "delay(0ns)", "delay", true),
        (
            Decision::Delay(u64::MAX),
            "delay(18446744073709551615ns)",
            "delay",
            true,
        ),
        (Decision::Skip, "skip", "skip", true),
        (Decision::Abort, "abort", "abort", true),
    ];
    for (d, text, task, fault) in cases {
        let mut buf = [0u8; ACTION_TEXT_MAX];
        let n = d.write_action(&mut buf);
        assert_eq!(&buf[..n], text.as_bytes());
        assert_eq!(d.to_string(), text);
        assert_eq!(d.task(), task);
        assert_eq!(d.is_fault(), fault);
    }
    let mut small = [0u8; 4];
    assert_eq!(Decision::Return(507_053).write_action(&mut small), 4);
    assert_eq!(&small, b"retu");
    assert_eq!(Decision::Skip.write_action(&mut []), 0);
}

#[test]
fn error_messages_name_the_column() {
    let cases = [
        (
            "aclrtMemcpyAsync=off->retrun",
            "at column 23: unknown task 'retrun' (expected off, return, delay, skip, abort)",
        ),
        (
            "aclrtMemcpyAsynk=return",
            "at column 1: unknown target 'aclrtMemcpyAsynk' (expected the name of a hooked \
             function, e.g. aclrtMemcpyAsync, HcclD2DMemcpyAsync or aclrtSynchronizeStream, \
             or *)",
        ),
        (
            "aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=return x",
            "at column 46: expected '->' or ';' after action, found 'x'",
        ),
        (
            "aclrtMemcpyAsync=return(ACL_ERROR_FOO)",
            "at column 25: unknown code name 'ACL_ERROR_FOO' (expected a number or a name \
             such as ACL_ERROR_RT_INTERNAL_ERROR)",
        ),
        (
            "*=  150%return",
            "at column 5: probability 150% is above 100%",
        ),
        (
            "aclrtMemcpyAsync[kind=1",
            "at column 17: unterminated '[' (expected ']' to close it)",
        ),
        (
            "aclrtMemcpyAsync=delay(2ms",
            "at column 23: unterminated '(' (expected ')' to close it)",
        ),
        (
            "aclrtMemcpyAsync=",
            "at column 18: empty action list after '=' (expected an action such as return, \
             delay(1ms), skip, abort or off), found end of spec",
        ),
        (
            "aclrtMemcpyAsync= ;*=skip",
            "at column 19: empty action list after '=' (expected an action such as return, \
             delay(1ms), skip, abort or off), found ';'",
        ),
        (
            "aclrtMemcpyAsync return",
            "at column 18: expected '=' or '[' after target 'aclrtMemcpyAsync', found 'r'",
        ),
        (
            "aclrtMemcpyAsync[kind=1] return",
            "at column 26: expected '=' after the filters, found 'r'",
        ),
        (
            "aclrtMemcpyAsync[rank=3]=return",
            "at column 18: filter 'rank' never matches aclrtMemcpyAsync (it is an argument \
             of the HCCL copies only)",
        ),
        (
            "aclrtMemcpyAsync[link=HCCS]=return",
            "at column 18: filter 'link' never matches aclrtMemcpyAsync (it is an argument \
             of the HCCL copies only)",
        ),
        (
            "*[knd=1]=return",
            "at column 3: unknown filter key 'knd' (expected kind, count, destMax, stream, \
             rank, link or depth)",
        ),
        (
            "*[kind<1]=return",
            "at column 7: filter 'kind' takes only = or !=, not '<'",
        ),
        (
            "*[stream>=0x10]=return",
            "at column 9: filter 'stream' takes only = or !=, not '>='",
        ),
        (
            "*[count~1]=return",
            "at column 8: expected an operator (=, !=, <, <=, >, >=) after 'count', found '~'",
        ),
        (
            "*[count=]=return",
            "at column 9: expected a value after 'count=', found ']'",
        ),
        (
            "*[count=4k]=return",
            "at column 9: unknown size suffix 'k' in '4k' (expected K, M, G, KiB, MiB or GiB)",
        ),
        (
            "*[count=99999999999G]=return",
            "at column 9: '99999999999G' is too large for 'count' (the limit is \
             18446744073709551615)",
        ),
        (
            "*[count=0x]=return",
            "at column 9: expected a number for 'count' (decimal or 0x hex, optionally \
             followed by K, M, G, KiB, MiB or GiB), found '0x'",
        ),
        (
            "*[destMax=0x1FFFFFFFFFFFFFFFF]=return",
            "at column 11: '0x1FFFFFFFFFFFFFFFF' is too large for 'destMax' (the limit is \
             18446744073709551615)",
        ),
        (
            "*[stream=main]=return",
            "at column 10: expected an address for 'stream' (decimal or 0x hex), found 'main'",
        ),
        (
            "*[count=1,]=return",
            "at column 11: expected a filter key (kind, count, destMax, stream, rank, link \
             or depth), found ']'",
        ),
        (
            "*[count=1;depth=0]=return",
            "at column 10: expected ',' or ']' after a filter, found ';'",
        ),
        (
            "aclrtMemcpyAsync[kind=ADDR_DEVICE_TO_DEVICE]=return",
            "at column 23: unknown kind 'ADDR_DEVICE_TO_DEVICE' for aclrtMemcpyAsync \
             (expected an aclrtMemcpyKind such as DEVICE_TO_HOST or \
             ACL_MEMCPY_DEVICE_TO_HOST, or a number)",
        ),
        (
            "*[kind=SIDEWAYS]=return",
            "at column 8: unknown kind 'SIDEWAYS' (expected an aclrtMemcpyKind or \
             HcclRtMemcpyKind name such as DEVICE_TO_HOST, or a number)",
        ),
        (
            "HcclMemcpyAsync[link=WIFI]=return",
            "at column 22: unknown link type 'WIFI' (expected one of ONCHIP, HCCS, PCIE, \
             ROCE, SIO, HCCS_SW, STANDARD_ROCE, UB, RESERVED, with or without LINK_, or a \
             number)",
        ),
        ("*=skip(1)", "at column 7: task 'skip' takes no argument"),
        (
            "*=delay",
            "at column 8: task 'delay' needs a duration in parentheses, e.g. delay(2ms), \
             found end of spec",
        ),
        (
            "*=delay(500)",
            "at column 9: duration '500' needs a unit (ns, us, ms or s), e.g. 500ms",
        ),
        (
            "*=delay(5min)",
            "at column 9: unknown duration unit 'min' in '5min' (expected ns, us, ms or s)",
        ),
        (
            "*=delay(61s)",
            "at column 9: delay 61s is above the 60s limit",
        ),
        (
            "*=delay()",
            "at column 9: expected a duration such as 500us or 2ms in delay(), found ')'",
        ),
        (
            "*=return(5 6)",
            "at column 12: expected ')' after the argument, found '6'",
        ),
        (
            "*=return(99999999999)",
            "at column 10: code '99999999999' is not a 32-bit integer (a number or a name \
             such as ACL_ERROR_RT_INTERNAL_ERROR)",
        ),
        ("*=0*return", "at column 3: count must be at least 1"),
        (
            "*=1.5*return",
            "at column 3: count '1.5' must be a whole number, e.g. 2*return",
        ),
        (
            "*=2*50%return",
            "at column 5: the probability must come before the count, e.g. 50%2*return",
        ),
        (
            "*=5 return",
            "at column 5: expected '%' or '*' after the number '5', found 'r'",
        ),
        (
            "*=1.2.3%return",
            "at column 3: malformed probability '1.2.3%' (expected a decimal from 0 to 100, \
             e.g. 5% or 0.5%)",
        ),
        (
            "*=return->",
            "at column 11: expected an action after '->', found end of spec",
        ),
        (
            "*=%return",
            "at column 3: expected a task (off, return, delay, skip, abort), found '%'",
        ),
        (
            "=return",
            "at column 1: expected a target (the name of a hooked function, e.g. \
             aclrtMemcpyAsync, HcclD2DMemcpyAsync or aclrtSynchronizeStream, or *), found '='",
        ),
        (
            "*=réturn",
            "at column 3: unknown task 'réturn' (expected off, return, delay, skip, abort)",
        ),
        (
            "ü=return",
            "at column 1: unknown target 'ü' (expected the name of a hooked function, e.g. aclrtMemcpyAsync, HcclD2DMemcpyAsync or \
             aclrtSynchronizeStream, or *)",
        ),
        (
            "*=return ☃",
            "at column 10: expected '->' or ';' after action, found '☃'",
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(parse_err(spec), want, "spec {spec:?}");
    }
}

#[test]
fn limits_are_enforced() {
    let long = format!("*=skip;{}", " ".repeat(MAX_SPEC_BYTES));
    let e = long.parse::<FaultSpec>().unwrap_err();
    assert_eq!(e.column, 1);
    assert!(e.message.contains("limit is 65536"), "{e}");

    let rules = "*=skip;".repeat(MAX_RULES);
    assert_eq!(parse(&rules).rule_count(), MAX_RULES);
    let e = format!("{rules}*=skip").parse::<FaultSpec>().unwrap_err();
    assert_eq!(e.column, rules.len() + 1);
    assert!(e.message.contains("too many rules"), "{e}");

    let filters = vec!["depth=0"; MAX_FILTERS].join(",");
    parse(&format!("*[{filters}]=skip"));
    let e = format!("*[{filters},depth=0]=skip")
        .parse::<FaultSpec>()
        .unwrap_err();
    assert!(e.message.contains("too many filters"), "{e}");

    let actions = vec!["1*skip"; MAX_ACTIONS].join("->");
    parse(&format!("*={actions}"));
    let e = format!("*={actions}->skip")
        .parse::<FaultSpec>()
        .unwrap_err();
    assert!(e.message.contains("too many actions"), "{e}");
}

#[test]
fn numeric_filters_at_their_boundaries() {
    let call = |count: u64| Call {
        count,
        ..Call::new(Api::Acl)
    };
    let cases: [(&str, u64, bool); 14] = [
        ("count=100", 100, true),
        ("count=100", 101, false),
        ("count!=100", 100, false),
        ("count!=100", 99, true),
        ("count<100", 99, true),
        ("count<100", 100, false),
        ("count<=100", 100, true),
        ("count<=100", 101, false),
        ("count>100", 101, true),
        ("count>100", 100, false),
        ("count>=100", 100, true),
        ("count>=100", 99, false),
        ("count=0x64", 100, true),
        ("count=18446744073709551615", u64::MAX, true),
    ];
    for (filter, count, want) in cases {
        let spec = format!("aclrtMemcpyAsync[{filter}]=return(1)");
        assert_eq!(selects(&spec, call(count)), want, "{spec} on count {count}");
    }
    for (text, value) in [
        ("1K", 1u64 << 10),
        ("1KiB", 1 << 10),
        ("3M", 3 << 20),
        ("3MiB", 3 << 20),
        ("2G", 2 << 30),
        ("2GiB", 2 << 30),
        ("0x10K", 16 << 10),
        ("0", 0),
    ] {
        let spec = format!("*[count>={text}]=return(1)");
        assert!(selects(&spec, call(value)), "{spec}");
        if value > 0 {
            assert!(!selects(&spec, call(value - 1)), "{spec}");
        }
    }
    let dm = |dest_max: u64| Call {
        dest_max,
        ..Call::new(Api::Hccl)
    };
    assert!(selects("*[destMax<1M]=return(1)", dm((1 << 20) - 1)));
    assert!(!selects("*[destMax<1M]=return(1)", dm(1 << 20)));
    assert!(selects("HcclMemcpyAsync[destMax=0]=return(1)", dm(0)));

    let on_stream = |stream: usize| Call {
        stream,
        ..Call::new(Api::Acl)
    };
    assert!(selects("*[stream=0x7f00]=return(1)", on_stream(0x7f00)));
    assert!(selects("*[stream=32512]=return(1)", on_stream(0x7f00)));
    assert!(!selects("*[stream=0x7f00]=return(1)", on_stream(0x7f01)));
    assert!(selects("*[stream!=0x7f00]=return(1)", on_stream(0)));

    let at_depth = |depth: u32| Call {
        depth,
        ..Call::new(Api::Acl)
    };
    assert!(selects("*[depth=1]=return(1)", at_depth(1)));
    assert!(!selects("*[depth=1]=return(1)", at_depth(0)));
    assert!(selects("*[depth>0]=return(1)", at_depth(1)));
    assert!(selects("*[depth<1]=return(1)", at_depth(0)));

    // Several filters: all must hold.
    let both = "*[count>=1K,count<2K,depth=0]=return(1)";
    assert!(selects(both, call(1024)));
    assert!(selects(both, call(2047)));
    assert!(!selects(both, call(2048)));
    assert!(!selects(
        both,
        Call {
            depth: 1,
            ..call(1024)
        }
    ));
}

#[test]
fn filter_values_beyond_their_field_are_rejected() {
    // rank and depth are 32-bit, stream is an address, count and destMax 64-bit: a
    // value the field cannot hold is an error at the value, not a rule that never fires.
    let cases = [
        (
            "HcclMemcpyAsync[rank=4294967296]=return",
            "at column 22: '4294967296' is too large for 'rank' (the limit is 4294967295)",
        ),
        (
            "*[depth=4294967296]=return",
            "at column 9: '4294967296' is too large for 'depth' (the limit is 4294967295)",
        ),
        (
            "*[depth>0x100000000]=return",
            "at column 9: '0x100000000' is too large for 'depth' (the limit is 4294967295)",
        ),
        (
            "*[rank<99999999999999999999999]=return",
            "at column 8: '99999999999999999999999' is too large for 'rank' (the limit is \
             4294967295)",
        ),
        (
            "*[stream=0x10000000000000000]=return",
            "at column 10: '0x10000000000000000' is too large for 'stream' (the limit is \
             18446744073709551615)",
        ),
        (
            "*[stream!=18446744073709551616]=return",
            "at column 11: '18446744073709551616' is too large for 'stream' (the limit is \
             18446744073709551615)",
        ),
        (
            "*[count>=16777216T]=return",
            "at column 10: unknown size suffix 'T' in '16777216T' (expected K, M, G, KiB, \
             MiB or GiB)",
        ),
        (
            "*[count>=17179869184G]=return",
            "at column 10: '17179869184G' is too large for 'count' (the limit is \
             18446744073709551615)",
        ),
        (
            "*[destMax=17592186044416M]=return",
            "at column 11: '17592186044416M' is too large for 'destMax' (the limit is \
             18446744073709551615)",
        ),
        (
            "*[count<18014398509481984K]=return",
            "at column 9: '18014398509481984K' is too large for 'count' (the limit is \
             18446744073709551615)",
        ),
        (
            "*[count=0x10000000000000000]=return",
            "at column 9: '0x10000000000000000' is too large for 'count' (the limit is \
             18446744073709551615)",
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(parse_err(spec), want, "{spec}");
    }
    // The largest values each field holds still parse and match.
    let h = |remote_rank: u32, depth: u32| Call {
        remote_rank,
        depth,
        ..Call::new(Api::Hccl)
    };
    assert!(selects(
        "HcclMemcpyAsync[rank=4294967295]=return(1)",
        h(u32::MAX, 0)
    ));
    assert!(selects("*[depth=0xffffffff]=return(1)", h(0, u32::MAX)));
    assert!(selects(
        "*[count=16777215G]=return(1)",
        Call {
            count: 16_777_215 << 30,
            ..Call::new(Api::Acl)
        }
    ));
    assert!(selects(
        "*[stream=0xffffffffffffffff]=return(1)",
        Call {
            stream: usize::MAX,
            ..Call::new(Api::Acl)
        }
    ));
}

#[test]
fn kind_filters_resolve_per_api() {
    for name in ["DEVICE_TO_HOST", "ACL_MEMCPY_DEVICE_TO_HOST", "2"] {
        let spec = format!("aclrtMemcpyAsync[kind={name}]=return(1)");
        assert!(selects(&spec, acl(2)), "{spec}");
        assert!(!selects(&spec, acl(1)), "{spec}");
        assert!(!selects(&spec, hccl(2)), "{spec}");
    }
    for name in [
        "ADDR_DEVICE_TO_DEVICE",
        "HCCL_RT_MEMCPY_KIND_ADDR_DEVICE_TO_DEVICE",
    ] {
        let spec = format!("HcclMemcpyAsync[kind={name}]=return(1)");
        assert!(selects(&spec, hccl(4)), "{spec}");
        assert!(!selects(&spec, hccl(3)), "{spec}");
    }
    // `*`: a name common to both APIs matches both.
    assert!(selects("*[kind=DEVICE_TO_HOST]=return(1)", acl(2)));
    assert!(selects("*[kind=DEVICE_TO_HOST]=return(1)", hccl(2)));
    // 4 is DEFAULT for ACL but ADDR_DEVICE_TO_DEVICE for HCCL.
    assert!(selects("*[kind=DEFAULT]=return(1)", acl(4)));
    assert!(!selects("*[kind=DEFAULT]=return(1)", hccl(4)));
    assert!(selects("*[kind!=DEFAULT]=return(1)", hccl(4)));
    assert!(!selects("*[kind!=DEFAULT]=return(1)", acl(4)));
    assert!(selects("*[kind=ADDR_DEVICE_TO_DEVICE]=return(1)", hccl(4)));
    assert!(!selects("*[kind=ADDR_DEVICE_TO_DEVICE]=return(1)", acl(4)));
    // A vendor prefix pins the API.
    assert!(selects(
        "*[kind=ACL_MEMCPY_DEVICE_TO_HOST]=return(1)",
        acl(2)
    ));
    assert!(!selects(
        "*[kind=ACL_MEMCPY_DEVICE_TO_HOST]=return(1)",
        hccl(2)
    ));
    assert!(selects(
        "*[kind=HCCL_RT_MEMCPY_KIND_DEVICE_TO_HOST]=return(1)",
        hccl(2)
    ));
    assert!(!selects(
        "*[kind=HCCL_RT_MEMCPY_KIND_DEVICE_TO_HOST]=return(1)",
        acl(2)
    ));
    assert!(
        "aclrtMemcpyAsync[kind=HCCL_RT_MEMCPY_KIND_DEVICE_TO_HOST]=skip"
            .parse::<FaultSpec>()
            .is_err()
    );
    // Integers match out-of-range kinds too; negative values are accepted.
    assert!(selects("*[kind=9]=return(1)", acl(9)));
    assert!(selects("*[kind=-1]=return(1)", hccl(-1)));
    assert!(selects("*[kind!=1]=return(1)", acl(9)));
}

#[test]
fn rank_and_link_only_match_hccl() {
    let h = |remote_rank: u32, link: i32| Call {
        remote_rank,
        link,
        ..Call::new(Api::Hccl)
    };
    assert!(selects("HcclMemcpyAsync[rank=3]=return(1)", h(3, 0)));
    assert!(!selects("HcclMemcpyAsync[rank=3]=return(1)", h(4, 0)));
    assert!(selects("*[rank>=3]=return(1)", h(4, 0)));
    assert!(!selects("*[rank>3]=return(1)", h(3, 0)));
    assert!(selects("*[rank<=3]=return(1)", h(3, 0)));
    assert!(selects("*[rank!=3]=return(1)", h(0, 0)));
    assert!(!selects("*[rank!=3]=return(1)", acl(0)));
    assert!(!selects("*[rank=0]=return(1)", acl(0)));
    for name in ["HCCS", "LINK_HCCS", "1"] {
        let spec = format!("HcclMemcpyAsync[link={name}]=return(1)");
        assert!(selects(&spec, h(0, 1)), "{spec}");
        assert!(!selects(&spec, h(0, 2)), "{spec}");
    }
    assert!(selects("*[link=RESERVED]=return(1)", h(0, 255)));
    assert!(selects("*[link!=HCCS]=return(1)", h(0, 0)));
    assert!(!selects("*[link!=HCCS]=return(1)", acl(0)));
    assert!(!selects("*[link=ONCHIP]=return(1)", acl(0)));
    assert!("*[link<HCCS]=skip".parse::<FaultSpec>().is_err());
}

#[test]
fn probability_is_seeded_and_roughly_right() {
    let run = |spec: &str, seed: u64, n: usize| -> Vec<bool> {
        let spec = parse(spec);
        (0..n)
            .map(|_| spec.decide(&acl(0), seed).is_fault())
            .collect()
    };
    let half = run("*=50%return", 1, 10_000);
    let fired = half.iter().filter(|&&f| f).count();
    assert!((4_500..=5_500).contains(&fired), "{fired}");
    assert_eq!(half, run("*=50%return", 1, 10_000));
    assert_ne!(half, run("*=50%return", 2, 10_000));
    assert_ne!(half, run("*=50%return", 1 << 63, 10_000));

    assert!(run("*=0%return", 3, 10_000).iter().all(|&f| !f));
    assert!(run("*=0.0%return", 3, 1_000).iter().all(|&f| !f));
    assert!(run("*=100%return", 3, 10_000).iter().all(|&f| f));
    assert!(run("*=100.0%return", 3, 1_000).iter().all(|&f| f));
    let tenth = run("*=0.5%return", 4, 100_000);
    let fired = tenth.iter().filter(|&&f| f).count();
    assert!((350..=650).contains(&fired), "{fired}");

    // Two actions in one rule draw from different streams.
    let spec = parse("*=50%return(1)->50%return(2)->skip");
    let mut counts = [0usize; 3];
    for _ in 0..10_000 {
        match spec.decide(&acl(0), 9) {
            Decision::Return(1) => counts[0] += 1,
            Decision::Return(2) => counts[1] += 1,
            Decision::Skip => counts[2] += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!((4_500..=5_500).contains(&counts[0]), "{counts:?}");
    assert!((2_000..=3_000).contains(&counts[1]), "{counts:?}");
    assert!((2_000..=3_000).contains(&counts[2]), "{counts:?}");
}

#[test]
fn probability_is_checked_before_the_count() {
    // A count is consumed only when the probability says yes.
    let spec = parse("*=50%3*return->skip");
    let decisions: Vec<_> = (0..1_000).map(|_| spec.decide(&acl(0), 5)).collect();
    let returns = decisions.iter().filter(|d| d.task() == "return").count();
    assert_eq!(returns, 3);
    let first_skip = decisions.iter().position(|d| *d == Decision::Skip).unwrap();
    assert!(first_skip < 10, "{decisions:?}");
}

#[test]
fn counts_are_exact_across_threads() {
    let spec = parse("*=100*return->off");
    let returns: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let spec = &spec;
                s.spawn(move || {
                    let call = if t % 2 == 0 { acl(1) } else { hccl(1) };
                    (0..10_000)
                        .filter(|_| spec.decide(&call, 42).is_fault())
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(returns, 100);
}

#[test]
fn describe_normalizes_and_parses_back() {
    let cases = [
        (
            "aclrtMemcpyAsync[kind=ACL_MEMCPY_DEVICE_TO_HOST]=2*off->2*return(507053)->off",
            "aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=2*off->2*return(507053)->off",
        ),
        (
            "*[kind=ACL_MEMCPY_DEFAULT,count>=1048576,destMax<0x400]=0.5%delay(2000us)",
            "*[kind=ACL_MEMCPY_DEFAULT,count>=1M,destMax<1K]=0.5%delay(2ms)",
        ),
        (
            "HcclMemcpyAsync[rank!=0x3,link=LINK_ROCE,stream=4096,depth=0]=return;*=abort",
            "HcclMemcpyAsync[rank!=3,link=ROCE,stream=0x1000,depth=0]=return; *=abort",
        ),
        (
            "*=100%1*return(HCCL_E_TIMEOUT)->delay(1000000000ns)->skip",
            "*=100%1*return(9)->delay(1s)->skip",
        ),
        ("*[count=1000]=return(-5)", "*[count=1000]=return(-5)"),
    ];
    for (spec, want) in cases {
        let described = parse(spec).describe();
        assert_eq!(described, want);
        assert_eq!(parse(&described).describe(), want);
        assert_eq!(parse(spec).to_string(), want);
    }
}

/// A small deterministic PRNG for the fuzz test (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const CORPUS: &[&str] = &[
    "aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=2*off->2*return(507053)->off",
    "HcclMemcpyAsync[rank>=1,link=LINK_HCCS,count<4K]=50%delay(500us)->return",
    "*[kind=ACL_MEMCPY_DEFAULT,destMax<=0x1000,depth=1]=0.5%3*skip;*=abort",
    "*[stream!=0x7f00,count>1MiB]=return(ACL_ERROR_RT_DEVICE_MEM_ERROR)->delay(2ms)",
    "aclrtMemcpyAsync=return(-1); HcclMemcpyAsync = 10 % 1 * return ( HCCL_E_PARA )",
    "*=delay(60s);;aclrtMemcpyAsync[kind!=3]=100%skip",
];

const ALPHABET: &[&str] = &[
    "aclrtMemcpyAsync",
    "HcclMemcpyAsync",
    "*",
    "[",
    "]",
    ",",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    ";",
    "->",
    "-",
    ">",
    "(",
    ")",
    "%",
    "kind",
    "count",
    "destMax",
    "stream",
    "rank",
    "link",
    "depth",
    "off",
    "return",
    "delay",
    "skip",
    "abort",
    "DEVICE_TO_HOST",
    "ACL_MEMCPY_",
    "HCCS",
    "ACL_ERROR_RT_INTERNAL_ERROR",
    "K",
    "M",
    "G",
    "KiB",
    "ms",
    "us",
    "ns",
    "s",
    "0x",
    "0",
    "1",
    "9",
    "99999999999999999999999",
    ".",
    " ",
    "\t",
    "é",
    "日本",
    "\u{0}",
    "-5",
    "100",
    "150",
];

fn mutate(rng: &mut Rng, spec: &str) -> String {
    let mut chars: Vec<char> = spec.chars().collect();
    for _ in 0..=rng.below(4) {
        let pos = rng.below(chars.len() + 1);
        match rng.below(5) {
            0 if !chars.is_empty() => {
                chars.remove(pos.min(chars.len() - 1));
            }
            1 if pos < chars.len() => {
                let token: Vec<char> = ALPHABET[rng.below(ALPHABET.len())].chars().collect();
                chars[pos] = token[0];
            }
            2 => {
                let token = ALPHABET[rng.below(ALPHABET.len())];
                chars.splice(pos..pos, token.chars());
            }
            3 => {
                let other: Vec<char> = CORPUS[rng.below(CORPUS.len())].chars().collect();
                let from = rng.below(other.len());
                let to = from + rng.below(other.len() - from + 1);
                chars.splice(pos..pos, other[from..to].iter().copied());
            }
            _ => {
                let end = pos + rng.below(chars.len() - pos + 1);
                chars.drain(pos..end);
            }
        }
    }
    chars.into_iter().collect()
}

fn check_parse(spec: &str) {
    let len = spec.chars().count();
    match spec.parse::<FaultSpec>() {
        Ok(parsed) => {
            let described = parsed.describe();
            let reparsed = described
                .parse::<FaultSpec>()
                .unwrap_or_else(|e| panic!("{spec:?} → {described:?}: {e}"));
            assert_eq!(reparsed.describe(), described, "{spec:?}");
            assert_eq!(reparsed.rule_count(), parsed.rule_count());
        }
        Err(e) => {
            assert!(
                (1..=len + 1).contains(&e.column),
                "{spec:?}: column {} outside 1..={}: {e}",
                e.column,
                len + 1
            );
            assert!(!e.message.is_empty());
        }
    }
}

#[test]
fn fuzz_parse_never_panics() {
    let mut rng = Rng(0x5EED_F00D_1234_5678);
    let mut ok = 0usize;
    for s in CORPUS {
        check_parse(s);
    }
    for i in 0..110_000 {
        let spec = if i % 4 == 3 {
            (0..rng.below(12))
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect::<String>()
        } else {
            let mut s = CORPUS[rng.below(CORPUS.len())].to_owned();
            for _ in 0..=rng.below(3) {
                s = mutate(&mut rng, &s);
            }
            s
        };
        if spec.parse::<FaultSpec>().is_ok() {
            ok += 1;
        }
        check_parse(&spec);
    }
    // The corpus mutations must exercise both outcomes.
    assert!(ok > 1_000, "{ok}");
}

proptest::proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,80}") {
        check_parse(&s);
    }

    #[test]
    fn decide_never_panics(
        spec in proptest::sample::select(CORPUS),
        kind in proptest::prelude::any::<i32>(),
        count in proptest::prelude::any::<u64>(),
        seed in proptest::prelude::any::<u64>(),
    ) {
        let spec: FaultSpec = spec.parse().unwrap();
        let call = Call { kind, count, ..Call::new(Api::Hccl) };
        let d = spec.decide(&call, seed);
        let mut buf = [0u8; 32];
        let n = d.write_action(&mut buf);
        let text = d.to_string();
        proptest::prop_assert_eq!(&buf[..n], text.as_bytes());
    }
}
