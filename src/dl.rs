//! glibc's own `dlsym` and `dlvsym`, found without asking the dynamic linker by name.
//!
//! The library exports `dlsym` and `dlvsym` itself (`abi/dlsym.rs`), so every call of
//! `dlsym` made inside it, by name, reaches its own export, and a plain `dlvsym(RTLD_NEXT,
//! "dlsym", …)` would reach its own `dlvsym`. The real ones are therefore read from the
//! dynamic symbol table (GNU or SysV hash, default version) of the object that defines
//! `dladdr`, which this library does not export: that object is glibc's `libc.so.6` (or
//! `libdl.so.2` before glibc 2.34), the one that also defines `dlsym` and `dlvsym`.
//! Finding them takes `dladdr1` and plain memory reads: no allocation, no lock of ours, no
//! `dlsym`, so it is safe in any context a `dlsym` call can come from (before the shim is
//! initialised, inside Rust std's own weak-symbol lookups, in a library constructor).
//! A leaf: imports nothing from the crate.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

/// glibc's `dlsym`, or 0 until found (read by the trampolines in `abi/dlsym.rs`).
pub static REAL_DLSYM: AtomicUsize = AtomicUsize::new(0);
/// glibc's `dlvsym`, or 0 until found.
pub static REAL_DLVSYM: AtomicUsize = AtomicUsize::new(0);

pub type DlsymFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;
pub type DlvsymFn = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> *mut c_void;

const RTLD_DL_LINKMAP: c_int = 2;
const DT_NULL: i64 = 0;
const DT_HASH: i64 = 4;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_GNU_HASH: i64 = 0x6fff_fef5;
const DT_VERSYM: i64 = 0x6fff_fff0;
const STT_FUNC: u8 = 2;
/// Version index bit of a symbol that is not the default version (`sym@VER`, not `@@`).
const VERSYM_HIDDEN: u16 = 0x8000;

#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const c_char,
    l_ld: *const Dyn,
}

#[repr(C)]
struct Dyn {
    d_tag: i64,
    d_val: u64,
}

#[repr(C)]
struct Sym {
    st_name: u32,
    st_info: u8,
    st_other: u8,
    st_shndx: u16,
    st_value: u64,
    st_size: u64,
}

unsafe extern "C" {
    /// glibc (`<dlfcn.h>`, `_GNU_SOURCE`); not bound by the `libc` crate.
    fn dladdr1(
        addr: *const c_void,
        info: *mut libc::Dl_info,
        extra: *mut *mut c_void,
        flags: c_int,
    ) -> c_int;
}

/// glibc's `dlsym` (0 if it cannot be found, which no glibc this runs on produces).
#[inline]
pub fn real_dlsym() -> usize {
    match REAL_DLSYM.load(Ordering::Acquire) {
        0 => find_real_dlsym(),
        addr => addr,
    }
}

/// glibc's `dlvsym` (0 if it cannot be found).
#[inline]
pub fn real_dlvsym() -> usize {
    match REAL_DLVSYM.load(Ordering::Acquire) {
        0 => find_real_dlvsym(),
        addr => addr,
    }
}

/// Finds and publishes glibc's `dlsym`; also the trampolines' slow path (C ABI, no unwind:
/// nothing in it can panic).
#[cold]
pub extern "C" fn find_real_dlsym() -> usize {
    let addr = glibc_function(c"dlsym");
    REAL_DLSYM.store(addr, Ordering::Release);
    addr
}

/// Finds and publishes glibc's `dlvsym`.
#[cold]
pub extern "C" fn find_real_dlvsym() -> usize {
    let addr = glibc_function(c"dlvsym");
    REAL_DLVSYM.store(addr, Ordering::Release);
    addr
}

/// `dlsym(handle, name)` by glibc itself, called from this library (for `RTLD_NEXT` that
/// means "after this library"). Null if glibc's `dlsym` cannot be found.
///
/// # Safety
/// As `dlsym`: `handle` is a pseudo-handle or a live handle from `dlopen`, `name` a
/// NUL-terminated string.
pub unsafe fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    match real_dlsym() {
        0 => std::ptr::null_mut(),
        addr => {
            // SAFETY: `addr` is glibc's `dlsym` (default version), whose C type is `DlsymFn`;
            // the caller upholds its contract.
            unsafe { std::mem::transmute::<usize, DlsymFn>(addr)(handle, name) }
        }
    }
}

/// Reads `base + offset`, relocated or not: glibc rewrites the dynamic section's pointers to
/// run-time addresses on most targets, and leaves them as offsets on a few.
fn relocated(base: usize, value: u64) -> usize {
    let value = value as usize;
    if value < base {
        base.wrapping_add(value)
    } else {
        value
    }
}

/// The address of the default version of the function `name` defined by the object that
/// defines `dladdr`; 0 if there is none.
fn glibc_function(name: &CStr) -> usize {
    // SAFETY: an all-zero `Dl_info` is valid (null pointers); dladdr1 only writes to it.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let mut map: *mut c_void = std::ptr::null_mut();
    let anchor = libc::dladdr as unsafe extern "C" fn(_, _) -> _ as *const c_void;
    // SAFETY: dladdr1 accepts any address and reports failure with 0; with
    // RTLD_DL_LINKMAP it stores the object's `struct link_map *` in `map`.
    if unsafe { dladdr1(anchor, &mut info, &mut map, RTLD_DL_LINKMAP) } == 0 || map.is_null() {
        return 0;
    }
    // SAFETY: `map` is the loader's link map of a loaded object (which stays loaded: it
    // holds glibc); its first three fields are the public ones of `<link.h>`.
    let map = unsafe { &*(map as *const LinkMap) };
    // SAFETY: `l_ld` is that object's dynamic section, as mapped by the loader.
    unsafe { lookup(map.l_addr, map.l_ld, name.to_bytes()) }
}

/// Looks `name` up in the dynamic symbol table described by `dynamic`.
///
/// # Safety
/// `dynamic` is the mapped dynamic section of a loaded object based at `base`.
unsafe fn lookup(base: usize, dynamic: *const Dyn, name: &[u8]) -> usize {
    let (mut strtab, mut symtab, mut gnu_hash, mut sysv_hash, mut versym) = (0, 0, 0, 0, 0);
    let mut entry = dynamic;
    loop {
        // SAFETY: the dynamic section is an array of entries ending with DT_NULL.
        let d = unsafe { &*entry };
        match d.d_tag {
            DT_NULL => break,
            DT_STRTAB => strtab = relocated(base, d.d_val),
            DT_SYMTAB => symtab = relocated(base, d.d_val),
            DT_GNU_HASH => gnu_hash = relocated(base, d.d_val),
            DT_HASH => sysv_hash = relocated(base, d.d_val),
            DT_VERSYM => versym = relocated(base, d.d_val),
            _ => {}
        }
        // SAFETY: not past the DT_NULL entry, which ends the array.
        entry = unsafe { entry.add(1) };
    }
    if strtab == 0 || symtab == 0 {
        return 0;
    }
    let matches = |index: usize| -> usize {
        // SAFETY: `index` comes from the object's own hash table, so it is a valid index
        // into its symbol table (and version table, which has one entry per symbol).
        let sym = unsafe { &*(symtab as *const Sym).add(index) };
        if sym.st_shndx == 0 || sym.st_value == 0 || sym.st_info & 0xf != STT_FUNC {
            return 0;
        }
        // SAFETY: as above.
        if versym != 0 && unsafe { *(versym as *const u16).add(index) } & VERSYM_HIDDEN != 0 {
            return 0;
        }
        // SAFETY: `st_name` is an offset into the string table, at a NUL-terminated name.
        let found = unsafe { CStr::from_ptr((strtab + sym.st_name as usize) as *const c_char) };
        if found.to_bytes() == name {
            base.wrapping_add(sym.st_value as usize)
        } else {
            0
        }
    };
    if gnu_hash != 0 {
        // SAFETY: `gnu_hash` is the object's DT_GNU_HASH table.
        unsafe { gnu_lookup(gnu_hash, name, matches) }
    } else if sysv_hash != 0 {
        // SAFETY: `sysv_hash` is the object's DT_HASH table.
        unsafe { sysv_lookup(sysv_hash, name, matches) }
    } else {
        0
    }
}

/// DT_GNU_HASH: `[nbuckets, symoffset, bloom_size, bloom_shift]`, the bloom words, the
/// buckets, then one chain word per symbol from `symoffset` on (low bit: last in chain).
///
/// # Safety
/// `table` is a mapped DT_GNU_HASH table of a loaded 64-bit object.
unsafe fn gnu_lookup(table: usize, name: &[u8], matches: impl Fn(usize) -> usize) -> usize {
    let hash = name.iter().fold(5381u32, |h, &c| {
        h.wrapping_mul(33).wrapping_add(u32::from(c))
    });
    let header = table as *const u32;
    // SAFETY: the table starts with four 32-bit words.
    let (nbuckets, symoffset, bloom_size) = unsafe { (*header, *header.add(1), *header.add(2)) };
    if nbuckets == 0 {
        return 0;
    }
    // SAFETY: the buckets follow the header and `bloom_size` 64-bit bloom words.
    let buckets = unsafe { (header.add(4) as *const u64).add(bloom_size as usize) } as *const u32;
    // SAFETY: the chains follow the `nbuckets` buckets.
    let chains = unsafe { buckets.add(nbuckets as usize) };
    // SAFETY: `hash % nbuckets` indexes a bucket.
    let mut index = unsafe { *buckets.add((hash % nbuckets) as usize) };
    if index < symoffset {
        return 0;
    }
    loop {
        // SAFETY: `index` is in a chain that the table ends with a word whose low bit is set.
        let chain = unsafe { *chains.add((index - symoffset) as usize) };
        if chain | 1 == hash | 1 {
            let addr = matches(index as usize);
            if addr != 0 {
                return addr;
            }
        }
        if chain & 1 != 0 {
            return 0;
        }
        index += 1;
    }
}

/// DT_HASH: `[nbucket, nchain]`, the buckets, the chains (0 ends a chain).
///
/// # Safety
/// `table` is a mapped DT_HASH table of a loaded object.
unsafe fn sysv_lookup(table: usize, name: &[u8], matches: impl Fn(usize) -> usize) -> usize {
    let hash = name.iter().fold(0u32, |h, &c| {
        let h = (h << 4).wrapping_add(u32::from(c));
        let g = h & 0xf000_0000;
        (h ^ (g >> 24)) & !g
    });
    let header = table as *const u32;
    // SAFETY: the table starts with two 32-bit words.
    let (nbucket, nchain) = unsafe { (*header, *header.add(1)) };
    if nbucket == 0 {
        return 0;
    }
    // SAFETY: the buckets follow the header, the chains follow the buckets.
    let (buckets, chains) = unsafe { (header.add(2), header.add(2 + nbucket as usize)) };
    // SAFETY: `hash % nbucket` indexes a bucket.
    let mut index = unsafe { *buckets.add((hash % nbucket) as usize) };
    let mut steps = 0;
    while index != 0 && index < nchain && steps < nchain {
        let addr = matches(index as usize);
        if addr != 0 {
            return addr;
        }
        // SAFETY: `index < nchain` indexes a chain word.
        index = unsafe { *chains.add(index as usize) };
        steps += 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_glibcs_own_functions() {
        let dlsym = real_dlsym();
        let dlvsym = real_dlvsym();
        assert_ne!(dlsym, 0);
        assert_ne!(dlvsym, 0);
        assert_ne!(dlsym, dlvsym);
        for (addr, name) in [(dlsym, c"dlsym"), (dlvsym, c"dlvsym")] {
            // SAFETY: an all-zero `Dl_info` is valid; dladdr only writes to it.
            let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
            // SAFETY: dladdr accepts any address.
            assert_ne!(unsafe { libc::dladdr(addr as *const c_void, &mut info) }, 0);
            // SAFETY: dladdr's names are NUL-terminated strings owned by the loader.
            let (file, symbol) = unsafe {
                (
                    CStr::from_ptr(info.dli_fname),
                    CStr::from_ptr(info.dli_sname),
                )
            };
            assert_eq!(symbol, name);
            assert!(file.to_bytes().windows(4).any(|w| w == b"libc"), "{file:?}");
        }
    }

    #[test]
    fn answers_as_glibc_does() {
        // SAFETY: RTLD_DEFAULT and a NUL-terminated name.
        let ours = unsafe { dlsym(libc::RTLD_DEFAULT, c"getpid".as_ptr()) };
        assert_eq!(
            ours as usize,
            libc::getpid as unsafe extern "C" fn() -> _ as usize
        );
        // SAFETY: as above.
        let missing = unsafe { dlsym(libc::RTLD_DEFAULT, c"no_such_symbol_anywhere".as_ptr()) };
        assert!(missing.is_null());
    }

    #[test]
    fn a_missing_name_is_zero() {
        assert_eq!(glibc_function(c"no_such_function_in_libc"), 0);
        assert_eq!(glibc_function(c"dlsym"), real_dlsym());
    }
}
