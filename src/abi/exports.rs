//! The exported vendor symbols, generated from the hook table (`abi/hooks.rs`) with the
//! vendor's exact C signatures (SPEC §2–3).
//!
//! Each export forwards at once when the shim is a pass-through; otherwise (out of line, so
//! that the pass-through saves no registers) it decodes its arguments into a [`Call`] and
//! takes one of four routes ([`Route`]), each ending in a tail call: straight to the real
//! function (nothing to check, fault or record, or this thread's memo says the call is
//! clean), the memory rules and a span around the real function, an allocation's
//! bookkeeping around it, or the whole pipeline ([`intercept::call`]). Exports are
//! `extern "C-unwind"`: a thread cancelled inside the real function unwinds through them as
//! it would without the shim. The `const _` lines prove at compile time that each export
//! and its function-pointer type (used by the resolver) agree.
#![allow(non_snake_case, clippy::too_many_arguments)]

use std::ffi::{c_int, c_void};

use super::types::{Call, Hook};
use crate::intercept::{self, Route};
use crate::{real, runtime};

macro_rules! define_exports {
    ($(
        $(#[$doc:meta])*
        $hook:ident = $name:ident ( $($arg:ident : $ty:ty),* ) : $api:ident, $class:ident,
        |$c:ident| $decode:block;
    )*) => {
        /// The C type of each hooked function, named after its hook.
        pub mod fns {
            #[allow(unused_imports)]
            use std::ffi::{c_int, c_void};
            $(pub type $hook = unsafe extern "C-unwind" fn($($ty),*) -> c_int;)*
        }

        /// The real function behind each hook, as its own type.
        pub mod resolve {
            use super::*;
            $(
                /// Resolves the real function (once per process).
                pub fn $hook() -> Option<fns::$hook> {
                    real::resolve(Hook::$hook).map(|addr| {
                        // SAFETY: `addr` is the non-null address of the vendor's symbol of
                        // this name, whose C signature is exactly `fns::$hook` (hook table).
                        unsafe { std::mem::transmute::<usize, fns::$hook>(addr) }
                    })
                }
            )*
        }

        $(
            $(#[$doc])*
            ///
            /// # Safety
            /// Same contract as the vendor function.
            #[unsafe(no_mangle)]
            pub unsafe extern "C-unwind" fn $name($($arg: $ty),*) -> c_int {
                #[inline(always)]
                fn decode($($arg: $ty),*) -> Call {
                    #[allow(unused_mut)]
                    let mut $c = Call::of(Hook::$hook);
                    $decode
                    $c
                }

                #[inline(always)]
                fn if_resolved() -> Option<fns::$hook> {
                    real::if_resolved(Hook::$hook).map(|addr| {
                        // SAFETY: as in `resolve::$hook`.
                        unsafe { std::mem::transmute::<usize, fns::$hook>(addr) }
                    })
                }

                /// [`Route::Record`], out of line with the export's own signature, so
                /// that every path of the export ends in a tail call.
                #[inline(never)]
                fn record($($arg: $ty,)* memo: u64) -> c_int {
                    let Some(f) = if_resolved() else {
                        return pipeline($($arg),*);
                    };
                    let call = decode($($arg),*);
                    // SAFETY: forwarding the caller's own arguments, unchanged.
                    match intercept::forward_and_record(call, memo, || unsafe { f($($arg),*) }) {
                        Some(ret) => ret,
                        None => pipeline($($arg),*),
                    }
                }

                /// [`Route::Memory`], out of line like [`Route::Record`].
                #[inline(never)]
                fn memory($($arg: $ty),*) -> c_int {
                    let Some(f) = if_resolved() else {
                        return pipeline($($arg),*);
                    };
                    let call = decode($($arg),*);
                    // SAFETY: forwarding the caller's own arguments, unchanged.
                    match intercept::forward_memory(call, || unsafe { f($($arg),*) }) {
                        Some(ret) => ret,
                        None => pipeline($($arg),*),
                    }
                }

                #[inline(never)]
                fn pipeline($($arg: $ty),*) -> c_int {
                    intercept::call(
                        decode($($arg),*),
                        resolve::$hook,
                        // SAFETY: forwarding the caller's own arguments, unchanged.
                        |f| unsafe { f($($arg),*) },
                        real::missing_code(Hook::$hook),
                    )
                }

                /// Everything but the pass-through, out of line: the registers its memo
                /// lookup needs are saved there, not on the pass-through's path.
                #[inline(never)]
                fn routed($($arg: $ty),*) -> c_int {
                    match intercept::route(&decode($($arg),*)) {
                        Route::Forward => {
                            if let Some(f) = if_resolved() {
                                // SAFETY: forwarding the caller's own arguments, unchanged.
                                return unsafe { f($($arg),*) };
                            }
                        }
                        Route::Record(memo) => return record($($arg,)* memo),
                        Route::Memory => return memory($($arg),*),
                        Route::Pipeline => {}
                    }
                    pipeline($($arg),*)
                }

                if runtime::pass_through() {
                    if let Some(f) = if_resolved() {
                        // SAFETY: forwarding the caller's own arguments, unchanged.
                        return unsafe { f($($arg),*) };
                    }
                    return pipeline($($arg),*);
                }
                routed($($arg),*)
            }

            const _: fns::$hook = $name;
        )*

        /// The address of the export of `hook` (for the `dlsym` interposition).
        pub fn export_of(hook: Hook) -> usize {
            match hook {
                $(Hook::$hook => $name as fns::$hook as usize,)*
            }
        }
    };
}

super::hooks::for_each_hook!(define_exports);

/// Keeps `c_void` and `c_int` in scope for the generated signatures.
const _: Option<(c_int, *const c_void)> = None;
