//! The `dlsym` and `dlvsym` exports (SPEC §2.3 "Handle lookups"): a program that finds a
//! hooked function with `dlopen` + `dlsym(handle, name)` (torch_npu, Python `ctypes`) gets
//! the shim's export when glibc's answer is the very function the shim forwards that name
//! to, so the call is seen; every other answer is glibc's, untouched.
//!
//! **Who is asking.** glibc answers `RTLD_NEXT` ("the next object after the caller's") and
//! `RTLD_DEFAULT` (the caller's scope and namespace) from its return address. Were this
//! library to call glibc's `dlsym` for them, the caller would become this library and the
//! answer could change (a `dlsym(RTLD_NEXT, …)` from the program would skip the shim's own
//! symbols; a plugin's `RTLD_DEFAULT` lookup would lose its local scope). So each export is
//! a small assembly trampoline: for those two pseudo-handles it *jumps* to glibc's function
//! with the stack and registers exactly as the caller left them, and glibc sees the real
//! caller and returns straight to it. Those lookups need no rewriting anyway: with the shim
//! preloaded its exports come first in the global scope, so they already find them. Only a
//! lookup on a real handle (whose answer does not depend on the caller, `LD_AUDIT` aside)
//! comes here to Rust, is answered by glibc, and is then compared with the resolver.
//!
//! **Before anything else.** Every `dlsym` inside this library reaches these exports too:
//! Rust std's weak-symbol lookups (`__pthread_get_minstack`, …) and the resolver. glibc's
//! functions are found by `crate::dl` without `dlsym`, without allocating, without
//! initialising the shim; the resolver calls them directly, never through the exports; a
//! rewrite reads only the hook table, `NPUSHIM_DLSYM` (once) and the resolver, and a name
//! that does not start with `acl` or `Hccl` costs two byte comparisons. A panic on the
//! way is caught and the program gets glibc's answer.
//!
//! Built for x86-64 and AArch64 (the trampolines are assembly); elsewhere there is no
//! `dlsym` export and handle lookups bypass the shim as before.

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_void};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use super::exports::export_of;
use super::types::Hook;
use crate::{dl, real, runtime};

/// `dlsym`: a trampoline (see the module header). Pseudo-handles jump to glibc's `dlsym`
/// as if called directly; real handles go to [`dlsym_on_handle`].
///
/// # Safety
/// As `dlsym`.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    std::arch::naked_asm!(
        // RTLD_NEXT is -1 and RTLD_DEFAULT 0: handle + 1 <= 1 for exactly those two.
        "lea rax, [rdi + 1]",
        "cmp rax, 1",
        "ja {handle}",
        "mov rax, qword ptr [rip + {real}]",
        "test rax, rax",
        "jz 2f",
        "jmp rax",
        // Not found yet: find it, keeping the arguments (entry rsp is 8 mod 16).
        "2:",
        "push rdi",
        "push rsi",
        "sub rsp, 8",
        "call {find}",
        "add rsp, 8",
        "pop rsi",
        "pop rdi",
        "test rax, rax",
        "jz 3f",
        "jmp rax",
        "3:",
        "xor eax, eax",
        "ret",
        handle = sym dlsym_on_handle,
        real = sym dl::REAL_DLSYM,
        find = sym dl::find_real_dlsym,
    )
}

/// `dlvsym`: the same trampoline as [`dlsym`], one argument more.
///
/// # Safety
/// As `dlvsym`.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlvsym(
    handle: *mut c_void,
    name: *const c_char,
    version: *const c_char,
) -> *mut c_void {
    std::arch::naked_asm!(
        "lea rax, [rdi + 1]",
        "cmp rax, 1",
        "ja {handle}",
        "mov rax, qword ptr [rip + {real}]",
        "test rax, rax",
        "jz 2f",
        "jmp rax",
        // Three pushes leave rsp 16-byte aligned for the call.
        "2:",
        "push rdi",
        "push rsi",
        "push rdx",
        "call {find}",
        "pop rdx",
        "pop rsi",
        "pop rdi",
        "test rax, rax",
        "jz 3f",
        "jmp rax",
        "3:",
        "xor eax, eax",
        "ret",
        handle = sym dlvsym_on_handle,
        real = sym dl::REAL_DLVSYM,
        find = sym dl::find_real_dlvsym,
    )
}

/// `dlsym` on AArch64: as on x86-64; the return address is `x30`, kept intact on the jump.
///
/// # Safety
/// As `dlsym`.
#[cfg(target_arch = "aarch64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    std::arch::naked_asm!(
        "cmn x0, #1",
        "b.eq 1f",
        "cbz x0, 1f",
        "b {handle}",
        "1:",
        "adrp x16, {real}",
        "ldr x16, [x16, :lo12:{real}]",
        "cbz x16, 2f",
        "br x16",
        "2:",
        "stp x29, x30, [sp, #-32]!",
        "mov x29, sp",
        "stp x0, x1, [sp, #16]",
        "bl {find}",
        "mov x16, x0",
        "ldp x0, x1, [sp, #16]",
        "ldp x29, x30, [sp], #32",
        "cbz x16, 3f",
        "br x16",
        "3:",
        "mov x0, #0",
        "ret",
        handle = sym dlsym_on_handle,
        real = sym dl::REAL_DLSYM,
        find = sym dl::find_real_dlsym,
    )
}

/// `dlvsym` on AArch64.
///
/// # Safety
/// As `dlvsym`.
#[cfg(target_arch = "aarch64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlvsym(
    handle: *mut c_void,
    name: *const c_char,
    version: *const c_char,
) -> *mut c_void {
    std::arch::naked_asm!(
        "cmn x0, #1",
        "b.eq 1f",
        "cbz x0, 1f",
        "b {handle}",
        "1:",
        "adrp x16, {real}",
        "ldr x16, [x16, :lo12:{real}]",
        "cbz x16, 2f",
        "br x16",
        "2:",
        "stp x29, x30, [sp, #-48]!",
        "mov x29, sp",
        "stp x0, x1, [sp, #16]",
        "str x2, [sp, #32]",
        "bl {find}",
        "mov x16, x0",
        "ldp x0, x1, [sp, #16]",
        "ldr x2, [sp, #32]",
        "ldp x29, x30, [sp], #48",
        "cbz x16, 3f",
        "br x16",
        "3:",
        "mov x0, #0",
        "ret",
        handle = sym dlvsym_on_handle,
        real = sym dl::REAL_DLVSYM,
        find = sym dl::find_real_dlvsym,
    )
}

/// `dlsym` on a real handle (the trampoline's other branch): glibc's answer, maybe the
/// shim's export instead.
///
/// # Safety
/// As `dlsym`.
unsafe extern "C-unwind" fn dlsym_on_handle(
    handle: *mut c_void,
    name: *const c_char,
) -> *mut c_void {
    // SAFETY: the caller's own arguments, unchanged.
    let answer = unsafe { dl::dlsym(handle, name) };
    // SAFETY: `name` is the caller's NUL-terminated string (glibc has just read it).
    unsafe { rewrite(name, answer) }
}

/// `dlvsym` on a real handle.
///
/// # Safety
/// As `dlvsym`.
unsafe extern "C-unwind" fn dlvsym_on_handle(
    handle: *mut c_void,
    name: *const c_char,
    version: *const c_char,
) -> *mut c_void {
    let answer = match dl::real_dlvsym() {
        0 => std::ptr::null_mut(),
        addr => {
            // SAFETY: `addr` is glibc's `dlvsym`, of C type `DlvsymFn`; the caller's own
            // arguments, unchanged.
            unsafe { std::mem::transmute::<usize, dl::DlvsymFn>(addr)(handle, name, version) }
        }
    };
    // SAFETY: as in `dlsym_on_handle`.
    unsafe { rewrite(name, answer) }
}

/// The hook named `name`, checking the first bytes before anything else: every hooked
/// symbol starts with `acl` or `Hccl`.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
unsafe fn hooked(name: *const c_char) -> Option<Hook> {
    if name.is_null() {
        return None;
    }
    let name = name.cast::<u8>();
    // SAFETY: each byte is read only if the ones before it were not NUL.
    let prefix = unsafe {
        match *name {
            b'a' => *name.add(1) == b'c' && *name.add(2) == b'l',
            b'H' => *name.add(1) == b'c' && *name.add(2) == b'c' && *name.add(3) == b'l',
            _ => false,
        }
    };
    if !prefix {
        return None;
    }
    // SAFETY: `name` is NUL-terminated (caller's contract).
    let name = unsafe { CStr::from_ptr(name.cast()) };
    Hook::by_symbol(name.to_str().ok()?)
}

thread_local! {
    /// Set while this thread compares an answer with the resolver (which may itself look
    /// symbols up): a lookup meanwhile is answered by glibc alone.
    static COMPARING: Cell<bool> = const { Cell::new(false) };
}

/// glibc's `answer` for `name`, or the shim's export when that answer is the very function
/// the shim forwards `name` to.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
unsafe fn rewrite(name: *const c_char, answer: *mut c_void) -> *mut c_void {
    if answer.is_null() {
        return answer;
    }
    // SAFETY: the caller's contract.
    let Some(hook) = (unsafe { hooked(name) }) else {
        return answer;
    };
    let entered = COMPARING.try_with(|c| !c.replace(true)).unwrap_or(false);
    if !entered {
        return answer;
    }
    let chosen = crate::boundary::guarded(|| choose(hook, answer as usize));
    let _ = COMPARING.try_with(|c| c.set(false));
    chosen.map_or(answer, |addr| addr as *mut c_void)
}

/// NPUSHIM_DLSYM (and NPUSHIM_DISABLE), read once: 0 not yet, 1 on, 2 off.
static SETTING: AtomicU8 = AtomicU8::new(0);

fn enabled() -> bool {
    let setting = match SETTING.load(Ordering::Relaxed) {
        0 => {
            // Read here rather than by initialising the shim: a lookup may come from a
            // library constructor, before the program's first hooked call. The values are
            // the ones initialisation reads (and reports, if malformed). The resolver gets
            // its search inputs now, so that the comparison below uses the very function
            // the exports will forward to (initialisation hands over the same values,
            // and only the first hand-over counts).
            let (config, _) = crate::config::Config::from_lookup(|name| std::env::var_os(name));
            real::configure(real::Search {
                acl_lib: config.acl_lib.clone(),
                hccl_lib: config.hccl_lib.clone(),
                ascend_homes: config.ascend_homes.clone(),
            });
            let setting = if config.dlsym && !config.disable {
                1
            } else {
                2
            };
            SETTING.store(setting, Ordering::Relaxed);
            setting
        }
        s => s,
    };
    setting == 1 && !runtime::pass_through()
}

/// One line per hook whose lookup found a function the shim does not forward to.
static REPORTED: [AtomicBool; Hook::ALL.len()] =
    [const { AtomicBool::new(false) }; Hook::ALL.len()];

fn choose(hook: Hook, answer: usize) -> usize {
    let export = export_of(hook);
    if answer == export || !enabled() {
        return answer;
    }
    let forwarded = real::resolve(hook);
    // The resolver's own lookups may have left an error for `dlerror()`; the program's
    // lookup succeeded, so it must find none.
    // SAFETY: dlerror has no preconditions; it clears this thread's pending error.
    unsafe { libc::dlerror() };
    if forwarded == Some(answer) {
        return export;
    }
    if !REPORTED[hook as usize].swap(true, Ordering::Relaxed) {
        crate::diag::warn!(
            "{} was looked up in {}, which is not the library npushim forwards it to ({}); \
             that library's {} calls are not seen",
            hook.symbol(),
            real::object_name(answer),
            forwarded.map_or_else(|| "none found".to_string(), real::object_name),
            hook.symbol()
        );
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hooked_names_are_considered() {
        // SAFETY: NUL-terminated names.
        unsafe {
            assert_eq!(
                hooked(c"aclrtMemcpyAsync".as_ptr()),
                Some(Hook::AclrtMemcpyAsync)
            );
            assert_eq!(
                hooked(c"HcclMemcpyAsync".as_ptr()),
                Some(Hook::HcclMemcpyAsync)
            );
            assert_eq!(hooked(c"aclInit".as_ptr()), None);
            assert_eq!(hooked(c"ac".as_ptr()), None);
            assert_eq!(hooked(c"H".as_ptr()), None);
            assert_eq!(hooked(c"".as_ptr()), None);
            assert_eq!(hooked(c"malloc".as_ptr()), None);
            assert_eq!(hooked(std::ptr::null()), None);
        }
    }

    #[test]
    fn other_answers_pass_untouched() {
        let answer = 0x1234 as *mut c_void;
        // SAFETY: NUL-terminated names.
        unsafe {
            assert_eq!(rewrite(c"getpid".as_ptr(), answer), answer);
            assert!(rewrite(c"aclrtMemcpyAsync".as_ptr(), std::ptr::null_mut()).is_null());
        }
    }
}
