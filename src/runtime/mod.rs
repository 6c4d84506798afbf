//! Process-wide state, one job a file: [`state`] (the configuration read once at the first
//! call, the pass-through switch, initialisation), [`faults`] (the fault-rule registry),
//! [`lineage`] (the seed and its fork lineage), [`stats`] (counters, rate-limited messages,
//! exit summaries), [`query`] (questions asked of the vendor runtime) and [`hooks`]
//! (constructor, exit, fork). The pipeline sees only what this file re-exports.
//!
//! The constructor does libc-level work only (registering `atexit` and `pthread_atfork`);
//! everything that needs std is initialised lazily at the first intercepted call.

mod faults;
mod hooks;
mod lineage;
mod query;
mod state;
mod stats;

pub use faults::{decide, faults_active, set_faults};
pub use lineage::seed;
pub use query::current_device;
pub use state::{Runtime, get, get_initialised, pass_through};
pub use stats::{describe_call, note_violations};
