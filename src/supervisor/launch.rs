//! Starting a worker: this very program, run again, whatever has happened
//! to the file it was started from.
//!
//! A package upgrade replaces the binary (a new file renamed over the
//! path) or deletes it; running the path again would then fail (no file)
//! or start a different program beside the workers still serving. So the
//! master opens the file it runs from once, at start (`/proc/self/exe`:
//! the running program's own file, even if already unlinked), and starts
//! every worker from that descriptor (`/proc/self/fd/N`, which the kernel
//! resolves to the open file, as `fexecve` does). A worker that dies is
//! replaced by the same program as its neighbours, always.
//!
//! An operator's SIGHUP is the one moment the program may change: the
//! master opens the path again ([`Program::reload`]) and, if that works,
//! the rolling restart runs the file now at the path, which is what an
//! upgrade expects; if the path is gone, it rolls on with the program it
//! has, and says so.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// The program workers run: an open descriptor of its file, and the path
/// it came from.
#[derive(Debug)]
pub(crate) struct Program {
    path: PathBuf,
    file: File,
}

impl Program {
    /// This process's own program.
    pub(crate) fn this() -> io::Result<Program> {
        let path = std::env::current_exe()?;
        let file = File::open("/proc/self/exe")
            .map_err(|e| io::Error::new(e.kind(), format!("/proc/self/exe: {e}")))?;
        Ok(Program { path, file })
    }

    /// Opens the path again (SIGHUP): the program found there runs from
    /// now on. On error nothing changes.
    pub(crate) fn reload(&mut self) -> io::Result<()> {
        let file = File::open(&self.path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        self.file = file;
        Ok(())
    }

    /// The path the program was started from.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// A command that runs the program from its descriptor, with `args`;
    /// its `argv[0]` is the path, so `ps` shows what it always did.
    pub(crate) fn command(&self, args: &[OsString]) -> Command {
        let mut command = Command::new(format!("/proc/self/fd/{}", self.fd()));
        command.arg0(&self.path).args(args);
        command
    }

    /// The descriptor (close-on-exec: the child's `/proc/self/fd/N` still
    /// names it when `execve` opens it).
    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy of `/bin/true` (or `true` wherever it is) in a fresh
    /// directory.
    fn copy_of_true(dir: &std::path::Path) -> Option<PathBuf> {
        let found = ["/bin/true", "/usr/bin/true"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())?;
        let copy = dir.join("program");
        std::fs::copy(found, &copy).ok()?;
        Some(copy)
    }

    #[test]
    fn a_program_runs_after_its_file_is_deleted() {
        let dir = std::env::temp_dir().join(format!("launch-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let Some(copy) = copy_of_true(&dir) else {
            eprintln!("SKIPPED: no /bin/true to copy");
            return;
        };
        let mut program = Program {
            file: File::open(&copy).unwrap(),
            path: copy.clone(),
        };
        std::fs::remove_file(&copy).unwrap();
        let status = program
            .command(&[])
            .status()
            .expect("runs from its descriptor");
        assert!(status.success());
        assert!(program.reload().is_err(), "the path is gone");
        let status = program.command(&[]).status().expect("still runs");
        assert!(status.success());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
