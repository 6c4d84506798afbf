//! Trace file naming and creation (SPEC §5).
//!
//! Expands the path template and creates the file new with
//! `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`, mode 0600: an existing file or a symlink at the
//! path is never overwritten or followed; a free suffixed name is chosen instead.

use std::ffi::CString;
use std::fmt;

/// Values for the template's `%` fields.
pub struct Names<'a> {
    pub pid: u32,
    pub rank: u32,
    pub host: &'a str,
}

/// Expands `%p` (pid), `%r` (rank), `%h` (host) and `%%`; any other `%x` stays as written.
pub fn expand(template: &str, names: &Names<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('p') => out.push_str(&names.pid.to_string()),
            Some('r') => out.push_str(&names.rank.to_string()),
            Some('h') => out.push_str(names.host),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
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
        let Ok(c_path) = CString::new(candidate.as_bytes()) else {
            return Err(CreateError {
                path: candidate,
                error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"),
            });
        };
        // SAFETY: `c_path` is a valid NUL-terminated string; open has no other preconditions.
        let fd = unsafe {
            libc::open(
                c_path.as_ptr(),
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
        assert_eq!(expand("npushim-%p.json", &n), "npushim-42.json");
        assert_eq!(
            expand("/t/%h/r%r-%p-100%%.json", &n),
            "/t/node1/r3-42-100%.json"
        );
        assert_eq!(expand("a%xb%", &n), "a%xb%");
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
