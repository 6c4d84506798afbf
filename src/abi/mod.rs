//! The C boundary: vendor types, the exported vendor functions, the `dlsym`/`dlvsym`
//! exports, the control API.

pub mod codes;
pub mod control;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub mod dlsym;
pub mod exports;
pub mod hooks;
pub mod types;
