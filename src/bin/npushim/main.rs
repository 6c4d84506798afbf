//! The `npushim` command-line tool: `run` a program under the shim, `report` on its traces,
//! `merge` per-rank traces into one timeline (SPEC §8).
//!
//! This file holds the command-line interface and the error policy only: every failure is
//! one `npushim: <what> (<path>)` line on stderr and exit status 2 (usage errors are clap's
//! messages, also status 2); a panic never shows a backtrace. The tool is self-contained:
//! it reads traces through their documented file format, not through the library's code.

// The library's own table of return codes, compiled from the same file (the tool does not
// link the library); the tool only names codes, so most of the table goes unused here.
#[allow(dead_code)]
#[path = "../../abi/codes.rs"]
mod codes;
// The words that turn tracing off, from the library's own source (see `codes`).
mod functions;
mod merge;
mod output;
mod reader;
mod report;
mod run;
#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../../words.rs"]
mod words;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use reader::TraceError;

/// Exit status of every failure of the tool itself.
const FAILURE_STATUS: u8 = 2;

/// A failure to report: one line for stderr and the exit status.
#[derive(Debug)]
pub struct Failure {
    message: String,
    status: u8,
}

impl Failure {
    /// `<what> (<path>)`.
    pub fn new(what: &str, path: &Path) -> Failure {
        Failure::line(&format!("{what} ({})", path.display()))
    }

    pub fn line(message: &str) -> Failure {
        Failure::with_status(message, FAILURE_STATUS)
    }

    pub fn with_status(message: &str, status: u8) -> Failure {
        Failure {
            message: message.to_string(),
            status,
        }
    }
}

impl From<TraceError> for Failure {
    fn from(error: TraceError) -> Failure {
        Failure::line(&error.to_string())
    }
}

#[derive(Parser)]
#[command(
    name = "npushim",
    version,
    about = "Run programs under libnpushim.so and read the memcpy traces it writes",
    long_about = "Run programs under libnpushim.so (the aclrtMemcpyAsync / HcclMemcpyAsync \
                  interposer) and read the Chrome-trace files it writes.\n\n\
                  Open a trace in https://ui.perfetto.dev or chrome://tracing; use `report` \
                  for statistics and `merge` to put the traces of many ranks on one timeline.",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command with libnpushim.so preloaded; exit with its status
    #[command(
        override_usage = "npushim run [OPTIONS] -- <CMD>...",
        long_about = "Run a command with libnpushim.so preloaded and exit with its status \
                      (128+N if signal N killed it).\n\n\
                      The library is taken from $NPUSHIM_LIB, else from beside this \
                      executable (or ../lib). It is put first in LD_PRELOAD; entries already \
                      there are kept after it. Options set the matching NPUSHIM_* variables; \
                      an option not given leaves the environment as it is. SIGINT, SIGTERM, \
                      SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to the command.",
        after_help = "Examples:\n  npushim run -- ./train --epochs 1\n  \
                      npushim run --summary --check strict -- python infer.py\n  \
                      npushim run --faults 'aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=2*off->return(507053)' --seed 7 -- ./app"
    )]
    Run(RunArgs),
    /// Print memcpy statistics of traces (calls, bytes, times, errors, faults)
    #[command(
        long_about = "Print memcpy statistics of traces, like `nsys stats`: calls, bytes, \
                      total/mean/p50/p99 host time and host-side rate per API and kind; errors \
                      by return code; check violations by rule; injected faults by action; \
                      top-level vs nested calls; the 10 slowest calls.\n\n\
                      Files are streamed: memory does not grow with their size. Cut-off \
                      traces (no closing ']', partial last line) are read too, and the report \
                      says so. p50/p99 come from a log-bucketed histogram: exact below 256 ns, \
                      otherwise within ±0.8 %."
    )]
    Report(ReportArgs),
    /// Merge per-process / per-rank traces into one timeline
    #[command(
        long_about = "Merge per-process / per-rank traces into one trace, one process track \
                      per input named `rank R (pid P, host H)` and sorted by rank.\n\n\
                      Traces from one host keep their CLOCK_MONOTONIC timestamps. When hosts \
                      differ, each trace is shifted by its clock anchor's (realtime - \
                      monotonic) minus that of the lowest-ranked trace, so all share that \
                      trace's time axis, aligned through the hosts' realtime clocks. Equal \
                      pids are moved apart (pid + k*10000000). Cut-off inputs are accepted; \
                      the output is a complete trace."
    )]
    Merge(MergeArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Trace file template: %p pid, %r rank, %h host, %% a '%'; `off` disables tracing
    /// [sets NPUSHIM_TRACE]
    #[arg(long, value_name = "PATH")]
    trace: Option<OsString>,
    /// Argument checks: off | warn | strict, with optional rule toggles such as
    /// `strict,-align` [sets NPUSHIM_CHECK]
    #[arg(long, value_name = "MODE")]
    check: Option<String>,
    /// Fault injection rules, e.g. `aclrtMemcpyAsync[count>=1M]=10%return(507053)`
    /// [sets NPUSHIM_FAULTS]
    #[arg(long, value_name = "SPEC")]
    faults: Option<String>,
    /// Seed of the fault injection's random choices, to replay a run [sets NPUSHIM_SEED]
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// After the command exits, print the report of every trace it wrote to stderr
    /// (traces are the files matching the trace template that appeared during the run)
    #[arg(long)]
    summary: bool,
    /// The command and its arguments (after `--`)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

#[derive(Args)]
struct ReportArgs {
    /// Print JSON instead of tables: one object per report, one per line
    #[arg(long)]
    json: bool,
    /// One report with the totals of all files instead of one report per file
    #[arg(long)]
    combine: bool,
    /// Trace files written by libnpushim.so (complete or cut off)
    #[arg(required = true, value_name = "TRACE")]
    traces: Vec<PathBuf>,
}

#[derive(Args)]
struct MergeArgs {
    /// Output trace: `-` for stdout; a new or regular file is written in full or not at
    /// all (created 0600, a regular file replaced); a FIFO or character device, or a
    /// symbolic link to one, is written through; anything else is refused, never replaced
    #[arg(short, long, value_name = "OUT", allow_hyphen_values = true)]
    output: PathBuf,
    /// Trace files to merge, one per process / rank, in any order
    #[arg(required = true, value_name = "TRACE")]
    traces: Vec<PathBuf>,
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print_stdout(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::line(&format!(
            "cannot write to stdout: {}",
            reader::io_reason(&e)
        ))),
    }
}

/// One report per file (or one for all with `--combine`). A file that cannot be read is
/// reported on stderr and the others are still reported; the status is then 2.
fn report(args: ReportArgs) -> Result<u8, Failure> {
    let groups: Vec<Vec<PathBuf>> = if args.combine {
        vec![args.traces]
    } else {
        args.traces.into_iter().map(|t| vec![t]).collect()
    };
    let mut failed = None;
    let mut printed = 0;
    for group in groups {
        let mut report = report::Report::new();
        let mut read = || -> Result<(), Failure> {
            for path in &group {
                for warning in report.add_file(path)? {
                    eprintln!("npushim: {warning}");
                }
            }
            Ok(())
        };
        if let Err(failure) = read() {
            eprintln!("npushim: {}", failure.message);
            failed = Some(failure.status);
            continue;
        }
        let text = if args.json {
            format!("{}\n", report.to_json())
        } else if printed == 0 {
            report.to_text()
        } else {
            format!("\n{}", report.to_text())
        };
        print_stdout(&text)?;
        printed += 1;
    }
    Ok(failed.unwrap_or(0))
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_string());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("npushim: internal error: {message}{place}");
    }));
    let cli = Cli::parse();
    let result = std::panic::catch_unwind(move || match cli.command {
        Command::Run(args) => run::run(run::RunOptions {
            trace: args.trace,
            check: args.check,
            faults: args.faults,
            seed: args.seed,
            summary: args.summary,
            command: args.command,
        })
        .map(|code| u8::try_from(code).unwrap_or(1)),
        Command::Report(args) => report(args),
        Command::Merge(args) => {
            merge::merge(&args.output, &args.traces).and_then(|merged| {
                // When stdout carries the trace, the summary goes to stderr.
                if merged.summary_on_stderr {
                    let _ = std::io::stderr().write_all(merged.summary.as_bytes());
                    Ok(0)
                } else {
                    print_stdout(&merged.summary).map(|()| 0)
                }
            })
        }
    });
    match result {
        Ok(Ok(status)) => ExitCode::from(status),
        Ok(Err(failure)) => {
            eprintln!("npushim: {}", failure.message);
            ExitCode::from(failure.status)
        }
        Err(_) => ExitCode::from(FAILURE_STATUS),
    }
}
