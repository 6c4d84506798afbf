//! Trace file naming and creation (SPEC §5).
//!
//! Expands the path template and creates the file new with
//! `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`, mode 0600: an existing file or a symlink at the
//! path is never overwritten or followed; a free suffixed name is chosen instead. The host
//! name enters the path only as one safe component. Names are built on the stack and the
//! few strings kept are allocated fallibly: running out of memory costs the trace, never
//! the process.

use std::fmt::{self, Write as _};

use crate::diag::{Errno, StackText};

/// Values for the template's `%` fields.
pub struct Names<'a> {
    pub pid: u32,
    pub rank: u32,
    pub host: &'a str,
}

/// Expands `%p` (pid), `%r` (rank), `%h` (host) and `%%`; any other `%x` stays as written.
/// The host name is made safe for one path component first ([`safe_host`]): a name the
/// system reports is not the user's to vouch for. `None` if the memory for the path cannot
/// be had.
pub fn expand(template: &str, names: &Names<'_>) -> Option<String> {
    let fields = template.matches('%').count();
    let mut out = String::new();
    out.try_reserve(template.len() + fields * names.host.len().max(10))
        .ok()?;
    let mut chars = template.chars();
    let num = |out: &mut String, v: u32| {
        let mut text = crate::diag::StackText::<10>::new();
        let _ = fmt::Write::write_fmt(&mut text, format_args!("{v}"));
        out.push_str(text.as_str());
    };
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('p') => num(&mut out, names.pid),
            Some('r') => num(&mut out, names.rank),
            Some('h') => out.extend(safe_host(names.host)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    Some(out)
}

/// A host name as one harmless path component: every character other than ASCII letters,
/// digits, `-`, `_` and `.` becomes `_` (so `/` cannot add a directory), and a name made of
/// dots only (`.`, `..`) or empty becomes underscores (so it cannot name a parent).
pub fn safe_host(host: &str) -> impl Iterator<Item = char> + '_ {
    let only_dots = host.bytes().all(|b| b == b'.');
    let empty = host.is_empty();
    host.chars()
        .map(move |c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' if !only_dots => c,
            '.' if !only_dots => c,
            _ => '_',
        })
        .chain(empty.then_some('_'))
}

/// Room for a path: the kernel refuses longer ones (with the terminating NUL).
const PATH_ROOM: usize = libc::PATH_MAX as usize;

/// A path built on the stack.
pub type PathText = StackText<PATH_ROOM>;

/// The `n`-th alternative name: `dir/name.json` → `dir/name.n.json` (or `path.n`); `n` = 0
/// is `path` itself. Cut (see [`StackText::is_cut`]) if longer than any path can be.
pub fn suffixed(path: &str, n: u32) -> PathText {
    let mut out = PathText::new();
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    let _ = match path[name_start..].rfind('.') {
        _ if n == 0 => out.write_str(path),
        Some(dot) if dot > 0 => {
            let dot = name_start + dot;
            write!(out, "{}.{n}{}", &path[..dot], &path[dot..])
        }
        _ => write!(out, "{path}.{n}"),
    };
    out
}

/// Why no trace file could be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// `open` failed.
    Os(Errno),
    /// The template holds a NUL byte.
    Nul,
    /// The name and [`MAX_SUFFIX`] suffixed ones all exist.
    AllTaken,
    /// The name could not be kept (no memory).
    NoMemory,
}

/// Why no trace file could be created, and at which path: the `n`-th name for `path`
/// (formatted without allocating, so a process out of memory still gets its line).
pub struct CreateError<'a> {
    pub path: &'a str,
    pub n: u32,
    pub why: Why,
}

impl fmt::Debug for CreateError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for CreateError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = suffixed(self.path, self.n);
        write!(f, "cannot create trace file {}", name.as_str())?;
        if name.is_cut() {
            f.write_str("...")?;
        }
        f.write_str(": ")?;
        match self.why {
            Why::Os(e) => write!(f, "{e}"),
            Why::Nul => write!(f, "the path contains a NUL byte"),
            Why::AllTaken => write!(f, "it and {MAX_SUFFIX} suffixed names exist"),
            Why::NoMemory => write!(f, "no memory to keep its name"),
        }
    }
}

/// How many suffixed names are tried before giving up.
pub const MAX_SUFFIX: u32 = 1000;

/// `path` as a C string on the stack: zeroed past the copied bytes, so NUL-terminated.
/// Refused if it holds a NUL or leaves no room for the terminating one.
fn nul_terminated(path: &[u8]) -> Result<[u8; PATH_ROOM], Why> {
    if path.len() >= PATH_ROOM {
        return Err(Why::Os(Errno(libc::ENAMETOOLONG)));
    }
    if path.contains(&0) {
        return Err(Why::Nul);
    }
    let mut c = [0u8; PATH_ROOM];
    c[..path.len()].copy_from_slice(path);
    Ok(c)
}

/// Creates a new file at `path` or at the first free suffixed name; returns fd and name.
/// Names are built on the stack; the one returned is the only allocation, made fallibly.
pub fn create(path: &str) -> Result<(libc::c_int, String), CreateError<'_>> {
    for n in 0..=MAX_SUFFIX {
        let candidate = suffixed(path, n);
        let fail = |why| Err(CreateError { path, n, why });
        if candidate.is_cut() {
            return fail(Why::Os(Errno(libc::ENAMETOOLONG)));
        }
        let c_path = match nul_terminated(candidate.as_bytes()) {
            Ok(c) => c,
            Err(why) => return fail(why),
        };
        // SAFETY: `c_path` is NUL-terminated ([`nul_terminated`]); open has no other
        // preconditions.
        let fd = unsafe {
            libc::open(
                c_path.as_ptr().cast(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd >= 0 {
            let mut name = String::new();
            if name.try_reserve_exact(candidate.as_str().len()).is_err() {
                // SAFETY: we created this empty file a moment ago and own `fd`.
                unsafe {
                    libc::unlink(c_path.as_ptr().cast());
                    libc::close(fd);
                }
                return fail(Why::NoMemory);
            }
            name.push_str(candidate.as_str());
            return Ok((fd, name));
        }
        let error = Errno::last();
        // EEXIST covers an existing file and a symlink (O_EXCL never follows); ELOOP a
        // symlink on systems that report it so.
        match error.0 {
            libc::EEXIST | libc::ELOOP => continue,
            _ => return fail(Why::Os(error)),
        }
    }
    Err(CreateError {
        path,
        n: 0,
        why: Why::AllTaken,
    })
}

/// Appends `path`, made absolute, and a newline to the run index `index`: a file that
/// `npushim run` created so that it is told which trace files the run wrote. The index is
/// opened without `O_CREAT` and used only if it is a regular file, so a stray setting never
/// creates a file or feeds a pipe or device; each line is one `write` on an `O_APPEND`
/// descriptor, so the lines of processes sharing an index do not interleave. Built on the
/// stack; a failure costs one line and nothing else.
pub fn list_in_index(index: &str, path: &str) {
    let fail = |why: &dyn fmt::Display| {
        crate::diag::warn!("cannot list trace file {path} in run index {index}: {why}");
    };
    let Ok(c_index) = nul_terminated(index.as_bytes()) else {
        return fail(&"the index path is too long or contains a NUL byte");
    };
    let mut line = [0u8; 2 * PATH_ROOM + 2];
    let mut len = 0;
    if !path.starts_with('/') {
        // SAFETY: `line` is writable for PATH_ROOM bytes; getcwd NUL-terminates within them.
        if unsafe { libc::getcwd(line.as_mut_ptr().cast(), PATH_ROOM) }.is_null() {
            return fail(&Errno::last());
        }
        len = line[..PATH_ROOM].iter().position(|b| *b == 0).unwrap_or(0);
        if len == 0 || line[len - 1] != b'/' {
            line[len] = b'/';
            len += 1;
        }
    }
    if len + path.len() + 1 > line.len() {
        return fail(&"the trace path is too long");
    }
    line[len..len + path.len()].copy_from_slice(path.as_bytes());
    len += path.len();
    line[len] = b'\n';
    len += 1;
    // SAFETY: `c_index` is NUL-terminated ([`nul_terminated`]).
    let fd = unsafe {
        libc::open(
            c_index.as_ptr().cast(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return fail(&Errno::last());
    }
    // SAFETY: an all-zero stat is a valid value for fstat to overwrite; `fd` is ours.
    let regular = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG
    };
    if !regular {
        fail(&"it is not a regular file");
    } else if let Err(e) = crate::diag::write_all(fd, &line[..len]) {
        fail(&e.errno);
    }
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand() {
        let n = Names {
            pid: 42,
            rank: 3,
            host: "node1",
        };
        let expand = |t: &str, n: &Names<'_>| expand(t, n).unwrap();
        assert_eq!(expand("npushim-%p.json", &n), "npushim-42.json");
        assert_eq!(
            expand("/t/%h/r%r-%p-100%%.json", &n),
            "/t/node1/r3-42-100%.json"
        );
        assert_eq!(expand("a%xb%", &n), "a%xb%");
    }

    #[test]
    fn host_names_cannot_leave_their_path_component() {
        let with = |host: &str| {
            expand(
                "/t/%h-%p.json",
                &Names {
                    pid: 1,
                    rank: 0,
                    host,
                },
            )
            .unwrap()
        };
        assert_eq!(with("a/../../etc/x"), "/t/a_.._.._etc_x-1.json");
        assert_eq!(with("node-1.example_2"), "/t/node-1.example_2-1.json");
        assert_eq!(with(".."), "/t/__-1.json");
        assert_eq!(with("."), "/t/_-1.json");
        assert_eq!(with(""), "/t/_-1.json");
        assert_eq!(with("nœud ☃\n"), "/t/n_ud___-1.json");
        for host in ["/", "../x", "a/b", "..", "\0", "../.."] {
            let path = with(host);
            let parts: Vec<&str> = path.split('/').collect();
            assert_eq!(parts.len(), 3, "{host:?} → {path}");
            assert!(
                parts[2] != ".." && !path.contains('\0'),
                "{host:?} → {path}"
            );
        }
    }

    #[test]
    fn suffixes_go_before_the_extension() {
        assert_eq!(suffixed("npushim-1.json", 2).as_str(), "npushim-1.2.json");
        assert_eq!(suffixed("npushim-1.json", 0).as_str(), "npushim-1.json");
        assert_eq!(suffixed("/a.b/trace", 1).as_str(), "/a.b/trace.1");
        assert_eq!(suffixed("/a/.hidden", 1).as_str(), "/a/.hidden.1");
    }

    #[test]
    fn existing_files_and_symlinks_are_left_alone() {
        let dir = std::env::temp_dir().join(format!("npushim-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.json");
        let victim = dir.join("victim");
        std::fs::write(&path, "keep").unwrap();
        std::fs::write(&victim, "victim").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("t.1.json")).unwrap();
        let (fd, name) = create(path.to_str().unwrap()).unwrap();
        // SAFETY: fd was just returned by open.
        unsafe { libc::close(fd) };
        assert!(name.ends_with("t.2.json"), "{name}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&name).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let missing = dir.join("missing/t.json");
        let err = create(missing.to_str().unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("cannot create trace file")
                && err.to_string().contains("No such file or directory"),
            "{err}"
        );
        let long = format!("{}/{}", dir.display(), "x/".repeat(PATH_ROOM));
        let err = create(&long).unwrap_err();
        assert_eq!(err.why, Why::Os(Errno(libc::ENAMETOOLONG)));
        assert_eq!(create("a\0b").unwrap_err().why, Why::Nul);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
