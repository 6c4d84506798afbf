//! # npushim — an LD_PRELOAD interposer for the Ascend runtime
//!
//! `libnpushim.so` exports `aclrtMemcpyAsync` (AscendCL) and `HcclMemcpyAsync` (HCCL) with
//! the vendor's exact C signatures. Preloaded into an unmodified program, it runs every call
//! through one pipeline ([`intercept`]): argument checks against the vendor documentation
//! ([`check`]), reproducible fault injection ([`fault`]), forwarding to the real function
//! found with `dlsym(RTLD_NEXT)` ([`real`]), and a span on a Chrome-trace timeline
//! ([`trace`]).
//!
//! ## Environment (read once, at the first call)
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `NPUSHIM_TRACE` | trace path template (`%p` pid, `%r` rank, `%h` host, `%%`) or `off` | `npushim-%p.json` |
//! | `NPUSHIM_TRACE_SINK` | `native` or `tracing-chrome` | `native` |
//! | `NPUSHIM_CHECK` | `off` / `warn` / `strict`, then `,+rule` / `,-rule` | `warn` |
//! | `NPUSHIM_FAULTS` | fault rules (SPEC §6 grammar) | none |
//! | `NPUSHIM_SEED` | seed of the fault PRNG | random, printed |
//! | `NPUSHIM_LOG` | `off` / `warn` / `info` | `warn` |
//! | `NPUSHIM_DISABLE` | `1`: pure pass-through | `0` |
//! | `NPUSHIM_DEVICE` | `events`: async copies timed on the device ([`device`]) | `off` |
//! | `NPUSHIM_ACL_LIB`, `NPUSHIM_HCCL_LIB` | library holding the real function | search |
//!
//! ## Failure policy
//!
//! The shim never hurts its host: no panic crosses the C boundary (the call is forwarded
//! unchanged instead), nothing is printed to stdout, a missing real symbol makes the call
//! return the vendor's "not supported" code, and any bad setting costs one `npushim: ` line
//! on stderr and falls back to its default.

// The module docs describe the internals they are made of, private modules included.
#![allow(rustdoc::private_intra_doc_links)]

pub mod abi;
pub mod boundary;
pub mod check;
pub mod config;
pub mod decimal;
pub mod device;
pub mod diag;
pub mod dl;
pub mod epoch;
pub mod fault;
pub mod instance;
pub mod intercept;
pub mod memmap;
pub mod memo;
pub mod real;
pub mod runtime;
pub mod sync;
pub mod tls;
pub mod trace;
pub mod words;
