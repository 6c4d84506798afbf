//! The C boundary: vendor types, the two exported vendor functions, the control API.

pub mod control;
pub mod exports;
pub mod hooks;
pub mod types;
