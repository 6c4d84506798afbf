//! Where `npushim merge -o OUT` writes, decided from what OUT is before anything is written.
//!
//! The rule (SPEC §11): never replace a path the tool did not create.
//!
//! - `-`: the merged trace goes to stdout (a reader that goes away, as `| head` does, is
//!   not an error).
//! - OUT does not exist: the trace is written to a temporary file beside it, created 0600
//!   like the shim's traces, and moved into place only when complete, without replacing
//!   anything that appeared at OUT meanwhile.
//! - OUT is a regular file: replaced the same way (written in full or not at all), provided
//!   it is still that file when the merge is complete; otherwise nothing is replaced.
//! - OUT is a FIFO or a character device (`/dev/null`, a terminal), or a symbolic link to
//!   one (`/dev/stdout`, `/dev/stderr`): opened for writing and written through; it stays
//!   what it is. A FIFO's open waits for a reader, as a shell redirection does.
//! - Anything else is refused with one line and left untouched: a symbolic link to a
//!   regular file or to nothing (neither the link nor its target is replaced or written),
//!   a directory, a block device, a socket.
//!
//! This module owns no trace format; it hands out a [`File`] and finishes it.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::Failure;
use crate::reader::io_reason;

/// The merged trace's destination.
pub struct Output {
    file: File,
    how: How,
}

enum How {
    Stdout,
    /// A FIFO or character device, written in place.
    Through,
    /// A temporary file, moved to `target` by [`Output::finish`]; `replace` holds the
    /// device and inode of the regular file found there, `None` when there was none.
    Temp {
        temp: PathBuf,
        target: PathBuf,
        replace: Option<(u64, u64)>,
        finished: bool,
    },
}

/// What `path` is, for the refusal message.
fn what_it_is(kind: fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "neither a regular file, a FIFO nor a character device"
    }
}

/// Device and inode: which file a path names.
fn identity(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

fn writable_in_place(kind: fs::FileType) -> bool {
    kind.is_fifo() || kind.is_char_device()
}

/// Opens a FIFO or character device for writing, checking that what was opened is still
/// one (a regular file swapped in meanwhile is not written to).
fn open_through(path: &Path, follow: bool) -> Result<File, Failure> {
    let flags = if follow {
        libc::O_NOCTTY
    } else {
        libc::O_NOCTTY | libc::O_NOFOLLOW
    };
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| Failure::new(&format!("cannot open output: {}", io_reason(&e)), path))?;
    let kind = file
        .metadata()
        .map_err(|e| Failure::new(&format!("cannot open output: {}", io_reason(&e)), path))?
        .file_type();
    if !writable_in_place(kind) {
        return Err(Failure::new(
            "the output changed while it was being opened; nothing written",
            path,
        ));
    }
    Ok(file)
}

fn temp_path(target: &Path) -> PathBuf {
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "merged.json".to_string());
    target.with_file_name(format!(".{file_name}.npushim-{}.tmp", std::process::id()))
}

fn create_temp(target: &Path, replace: Option<(u64, u64)>) -> Result<Output, Failure> {
    let temp = temp_path(target);
    // O_EXCL: a file or symbolic link already at the temporary name is never followed.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| Failure::new(&format!("cannot create output: {}", io_reason(&e)), target))?;
    Ok(Output {
        file,
        how: How::Temp {
            temp,
            target: target.to_path_buf(),
            replace,
            finished: false,
        },
    })
}

/// Moves `from` to `to` unless something exists at `to`.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (c_from, c_to) = (c(from)?, c(to)?);
    // SAFETY: both pointers are NUL-terminated paths that live for the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        // A file system without RENAME_NOREPLACE: link(2) never replaces either.
        Some(libc::EINVAL | libc::ENOSYS) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        _ => Err(error),
    }
}

impl Output {
    /// Decides how to write to `path` (see the module documentation) and opens it.
    pub fn open(path: &Path) -> Result<Output, Failure> {
        if path.as_os_str() == "-" {
            let fd = io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Failure::line(&format!("cannot use stdout: {}", io_reason(&e))))?;
            return Ok(Output {
                file: File::from(fd),
                how: How::Stdout,
            });
        }
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return create_temp(path, None),
            Err(e) => {
                return Err(Failure::new(
                    &format!("cannot use output: {}", io_reason(&e)),
                    path,
                ));
            }
        };
        let kind = meta.file_type();
        if kind.is_file() {
            return create_temp(path, Some(identity(&meta)));
        }
        if writable_in_place(kind) {
            let file = open_through(path, false)?;
            return Ok(Output {
                file,
                how: How::Through,
            });
        }
        if kind.is_symlink() {
            let through = fs::metadata(path).is_ok_and(|m| writable_in_place(m.file_type()));
            if through {
                let file = open_through(path, true)?;
                return Ok(Output {
                    file,
                    how: How::Through,
                });
            }
            return Err(Failure::new(
                "the output is a symbolic link and not to a FIFO or character device; \
                 npushim merge neither replaces it nor writes through it: give the target's \
                 path, or -o - for stdout",
                path,
            ));
        }
        Err(Failure::new(
            &format!(
                "the output is {}; npushim merge writes to a new or regular file, a FIFO, \
                 a character device, or - for stdout",
                what_it_is(kind)
            ),
            path,
        ))
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Whether this is stdout, where a reader that went away ends the output quietly.
    pub fn is_stdout(&self) -> bool {
        matches!(self.how, How::Stdout)
    }

    /// Whether the trace goes where stdout goes (`-`, or `/dev/stdout` and the like), so
    /// that nothing else may be printed there.
    pub fn shares_stdout(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let identity = |m: fs::Metadata| (m.dev(), m.ino(), m.rdev());
        let stdout = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .and_then(|f| f.metadata());
        match (stdout, self.file.metadata()) {
            (Ok(a), Ok(b)) => self.is_stdout() || identity(a) == identity(b),
            _ => self.is_stdout(),
        }
    }

    /// How the summary names the destination.
    pub fn describe(&self, path: &Path) -> String {
        match self.how {
            How::Stdout => "stdout".to_string(),
            _ => path.display().to_string(),
        }
    }

    /// Completes the output once everything was written and flushed: a temporary file is
    /// synced and moved into place.
    pub fn finish(mut self) -> Result<(), Failure> {
        let How::Temp {
            temp,
            target,
            replace,
            finished,
        } = &mut self.how
        else {
            return Ok(());
        };
        let fail =
            |e: io::Error| Failure::new(&format!("cannot write output: {}", io_reason(&e)), target);
        self.file.sync_all().map_err(fail)?;
        if let Some(seen) = *replace {
            // Only the regular file found at the start is replaced: anything put there
            // meanwhile (a FIFO, a link) is left alone.
            let now = fs::symlink_metadata(&*target)
                .ok()
                .filter(|m| m.file_type().is_file())
                .map(|m| identity(&m));
            if now != Some(seen) {
                return Err(Failure::new(
                    "the output changed while merging; it was left as it is and the merge \
                     not written",
                    target,
                ));
            }
            fs::rename(&*temp, &*target).map_err(fail)?;
        } else {
            rename_no_replace(temp, target).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Failure::new(
                        "the output appeared while merging; it was left as it is and the \
                         merge not written",
                        target,
                    )
                } else {
                    fail(e)
                }
            })?;
        }
        *finished = true;
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let How::Temp {
            temp,
            finished: false,
            ..
        } = &self.how
        {
            let _ = fs::remove_file(temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("npushim-output-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_all(output: &Output, text: &str) {
        output.file().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_regular_file_swapped_for_a_link_while_merging_is_not_replaced() {
        let dir = scratch("swapped");
        let out = dir.join("out.json");
        fs::write(&out, "old\n").unwrap();
        let output = Output::open(&out).unwrap();
        write_all(&output, "new\n");
        fs::remove_file(&out).unwrap();
        std::os::unix::fs::symlink("victim", &out).unwrap();
        assert!(output.finish().is_err());
        assert_eq!(fs::read_link(&out).unwrap(), Path::new("victim"));
        let left: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary file left: {left:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_path_that_appears_while_merging_is_not_replaced() {
        let dir = scratch("appeared");
        let out = dir.join("out.json");
        let output = Output::open(&out).unwrap();
        write_all(&output, "new\n");
        fs::write(&out, "someone else's\n").unwrap();
        assert!(output.finish().is_err());
        assert_eq!(fs::read_to_string(&out).unwrap(), "someone else's\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_regular_file_is_replaced_and_a_new_one_created_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("replaced");
        let out = dir.join("out.json");
        fs::write(&out, "old\n").unwrap();
        let output = Output::open(&out).unwrap();
        write_all(&output, "new\n");
        output.finish().unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap(), "new\n");
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
