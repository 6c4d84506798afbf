//! Trace file naming and creation (SPEC §5).
//!
//! Expands the path template and creates the file new with
//! `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`, mode 0600: an existing file or a symlink at the
//! path is never overwritten or followed; a free suffixed name is chosen instead.

use std::fmt;

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

/// The `n`-th alternative name: `dir/name.json` → `dir/name.n.json` (or `path.n`).
pub fn suffixed(path: &str, n: u32) -> String {
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    match path[name_start..].rfind('.') {
        Some(dot) if dot > 0 => {
            let dot = name_start + dot;
            format!("{}.{n}{}", &path[..dot], &path[dot..])
        }
        _ => format!("{path}.{n}"),
    }
}

/// Why no trace file could be created.
#[derive(Debug)]
pub struct CreateError {
    pub path: String,
    pub error: std::io::Error,
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot create trace file {}: {}", self.path, self.error)
    }
}

/// How many suffixed names are tried before giving up.
pub const MAX_SUFFIX: u32 = 1000;

/// Creates a new file at `path` or at the first free suffixed name; returns fd and name.
pub fn create(path: &str) -> Result<(libc::c_int, String), CreateError> {
    for n in 0..=MAX_SUFFIX {
        let candidate = if n == 0 {
            path.to_string()
        } else {
            suffixed(path, n)
        };
        // A NUL-terminated copy on the stack; a path too long for it is one the kernel
        // would refuse too.
        let mut c_path = [0u8; libc::PATH_MAX as usize];
        if candidate.len() >= c_path.len() || candidate.as_bytes().contains(&0) {
            let error = if candidate.len() >= c_path.len() {
                std::io::Error::from_raw_os_error(libc::ENAMETOOLONG)
            } else {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL")
            };
            return Err(CreateError {
                path: candidate,
                error,
            });
        }
        c_path[..candidate.len()].copy_from_slice(candidate.as_bytes());
        // SAFETY: `c_path` is NUL-terminated (zeroed past the copied name, which has no
        // NUL); open has no other preconditions.
        let fd = unsafe {
            libc::open(
                c_path.as_ptr().cast(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd >= 0 {
            return Ok((fd, candidate));
        }
        let error = std::io::Error::last_os_error();
        // EEXIST covers an existing file and a symlink (O_EXCL never follows); ELOOP a
        // symlink on systems that report it so.
        match error.raw_os_error() {
            Some(libc::EEXIST) | Some(libc::ELOOP) => continue,
            _ => {
                return Err(CreateError {
                    path: candidate,
                    error,
                });
            }
        }
    }
    Err(CreateError {
        path: path.to_string(),
        error: std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("it and {MAX_SUFFIX} suffixed names exist"),
        ),
    })
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
        assert_eq!(suffixed("npushim-1.json", 2), "npushim-1.2.json");
        assert_eq!(suffixed("/a.b/trace", 1), "/a.b/trace.1");
        assert_eq!(suffixed("/a/.hidden", 1), "/a/.hidden.1");
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
        let err = create(dir.join("missing/t.json").to_str().unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("cannot create trace file"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
