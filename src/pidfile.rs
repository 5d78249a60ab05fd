//! The pid file: one path that always names the process to address, as nginx's and HAProxy's
//! `-p` do. The pid of a heird service moves at every handoff, so whoever wrote `$!` down
//! would soon hold a stale pid; the pid file follows the service instead:
//! - the process that becomes primary writes its own pid (the first process once it is ready,
//!   a successor once it is handed over, a predecessor that takes the service back);
//! - at a handover the old process writes its successor's pid first, beside `MAINPID=`, so the
//!   file is right by the time `reload` answers;
//! - under a supervisor (`supervise`), the supervisor's pid, which never moves, and its workers
//!   leave the file alone;
//! - the last stop removes it, when it still names the process that stops.
//!
//! Writes replace the file in one `rename(2)`, so a reader never sees it half written.

use std::io::{self, Write};
use std::path::Path;

use tracing::{info, warn};

/// Writes `pid` and a newline to `path`, replacing it whole (a temporary file beside it,
/// renamed over it). A failure is logged: the service serves on without a correct pid file.
pub fn write(path: &Path, pid: u32) {
    match try_write(path, pid) {
        Ok(()) => info!(path = %path.display(), pid, "pid file written"),
        Err(e) => warn!(path = %path.display(), pid, error = %e, "cannot write the pid file"),
    }
}

fn try_write(path: &Path, pid: u32) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let mut tmp_name = name.to_owned();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{pid}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes `path` if it names `pid` (a stop that is the service's last); leaves a file that
/// names another process (a successor that took over, another instance) alone.
pub fn remove_if_names(path: &Path, pid: u32) {
    match read(path) {
        Ok(p) if p == pid => match std::fs::remove_file(path) {
            Ok(()) => info!(path = %path.display(), "pid file removed"),
            Err(e) => warn!(path = %path.display(), error = %e, "cannot remove the pid file"),
        },
        Ok(_) | Err(_) => {}
    }
}

/// The pid that `path` names; a file that holds no pid is `InvalidData`.
pub fn read(path: &Path) -> io::Result<u32> {
    let text = std::fs::read_to_string(path)?;
    parse(&text).ok_or_else(|| {
        let start: String = text.chars().take(40).collect();
        io::Error::new(io::ErrorKind::InvalidData, format!("holds no pid: {start:?}"))
    })
}

/// A pid file's text: one positive decimal pid, surrounding whitespace allowed.
fn parse(text: &str) -> Option<u32> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|p| *p > 0 && *p <= i32::MAX as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pid_and_refuses_the_rest() {
        assert_eq!(parse("1234\n"), Some(1234));
        assert_eq!(parse("  7 "), Some(7));
        assert_eq!(parse(""), None);
        assert_eq!(parse("0\n"), None);
        assert_eq!(parse("-1\n"), None);
        assert_eq!(parse("12 34\n"), None);
        assert_eq!(parse("4294967295\n"), None);
    }

    #[test]
    fn written_whole_and_removed_only_by_the_pid_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        write(&path, 41);
        write(&path, 42);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "42\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        remove_if_names(&path, 41);
        assert_eq!(read(&path).unwrap(), 42, "another pid's stop leaves it");
        remove_if_names(&path, 42);
        assert!(!path.exists());
        assert_eq!(read(&path).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
