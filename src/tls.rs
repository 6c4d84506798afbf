//! Per-thread words the hot path reads on every call, in the library's static TLS block.
//!
//! A `thread_local!` in a shared library is reached through `__tls_get_addr`: a call that
//! clobbers every argument register, so an export whose shortest path is "look, then jump
//! to the real function" has to save and restore the caller's arguments around it. On
//! x86-64 Linux, [`crate::static_tls!`] instead places the value in the library's static TLS
//! block and reaches it with the initial-exec sequence of the ELF ABI: the thread pointer
//! plus an offset the dynamic linker fixes at load time (two loads, no call), as allocators
//! built for `LD_PRELOAD` do. The cost is a `DF_STATIC_TLS` library: when it is loaded
//! with `dlopen` after start (rather than preloaded or linked), its TLS block (about
//! 1.4 KiB) comes out of the surplus glibc reserves for that case. Elsewhere the value is
//! an ordinary `thread_local!`.
//!
//! Either way the values are destructor-free and start zeroed: usable from the first
//! instruction of a thread to its last (thread-exit destructors and `atexit` handlers
//! included), never `None` on x86-64 Linux.

/// Declares `fn $get() -> Option<&'static $ty>`: the calling thread's own `$ty`, zeroed at
/// thread start, in static TLS under the (hidden) symbol `$sym` on x86-64 Linux. The
/// `unsafe` marks the caller's promise that all-zero bytes are a valid `$ty` (integers,
/// raw pointers, cells of them). The reference is for the calling thread only; share it
/// with no other thread.
#[macro_export]
macro_rules! static_tls {
    ($(#[$meta:meta])* unsafe $vis:vis fn $get:ident() -> $ty:ty = $sym:ident;) => {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        std::arch::global_asm!(
            ".pushsection .tbss,\"awT\",@nobits",
            concat!(".globl ", stringify!($sym)),
            concat!(".hidden ", stringify!($sym)),
            ".p2align {align}",
            concat!(".type ", stringify!($sym), ",@object"),
            concat!(".size ", stringify!($sym), ", {size}"),
            concat!(stringify!($sym), ":"),
            ".zero {size}",
            ".popsection",
            size = const std::mem::size_of::<$ty>(),
            align = const std::mem::align_of::<$ty>().trailing_zeros(),
        );

        $(#[$meta])*
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        #[inline(always)]
        $vis fn $get() -> Option<&'static $ty> {
            let p: *const $ty;
            // SAFETY: the initial-exec TLS sequence of the x86-64 ELF ABI: `%fs:0` holds
            // the thread pointer, and the GOT slot named by `@GOTTPOFF` holds the offset
            // of `$sym` from it, filled in by the dynamic linker when the library is
            // loaded. It only reads memory; the result is the same for the whole thread.
            unsafe {
                std::arch::asm!(
                    "mov {p}, qword ptr fs:[0]",
                    concat!("add {p}, qword ptr [rip + ", stringify!($sym), "@GOTTPOFF]"),
                    p = out(reg) p,
                    options(pure, readonly, nostack),
                );
            }
            // SAFETY: `p` is this thread's block of `size_of::<$ty>()` bytes, aligned as
            // `$ty`, zeroed at thread start (a valid `$ty`: the declaration's promise), and
            // alive until the thread's TLS is freed, after its last instruction. Only this
            // thread uses it (the declaration's contract), so no other reference aliases it
            // mutably.
            Some(unsafe { &*p })
        }

        $(#[$meta])*
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        #[inline(always)]
        $vis fn $get() -> Option<&'static $ty> {
            thread_local! {
                // SAFETY: the declaration promises that all-zero bytes are a valid `$ty`.
                static SLOT: $ty = const { unsafe { std::mem::zeroed() } };
            }
            // SAFETY: the value is destructor-free and used only by the calling thread
            // while it runs; `try_with` fails (`None`) once its storage is being torn down.
            SLOT.try_with(|v| unsafe { &*(v as *const $ty) }).ok()
        }
    };
}
