//! One run per cluster at a time: a lock file per cluster in the state
//! directory, created atomically, naming its holder.
//!
//! A lock whose holder process is gone (same host, no such pid running
//! pitcrew) is stale. It is taken over only when the operator says so
//! (`--break-lock`), or by `resume` of the very run that held it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub run: String,
    pub pid: u32,
    pub host: String,
    pub since: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run {} (pid {} on {}, since {})", self.run, self.pid, self.host, self.since)
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LockError {
    #[error("cluster `{cluster}` is locked by {holder}")]
    #[diagnostic(code(pitcrew::lock::held), help("one run per cluster at a time: wait for that run to finish"))]
    Held { cluster: String, holder: LockHolder },
    #[error("cluster `{cluster}` has a stale lock from {holder}, whose process is gone")]
    #[diagnostic(
        code(pitcrew::lock::stale),
        help("`pitcrew resume {}` continues that run; --break-lock takes the lock over (recorded in the audit trail)", holder.run)
    )]
    Stale { cluster: String, holder: LockHolder },
    #[error("cannot use lock file {path}: {source}")]
    #[diagnostic(code(pitcrew::lock::io))]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether a lock holder's process still runs pitcrew on this host.
pub fn holder_alive(holder: &LockHolder) -> bool {
    if holder.host != host_name() {
        // Another machine: pitcrew cannot tell, so it assumes alive.
        return true;
    }
    std::fs::read(format!("/proc/{}/cmdline", holder.pid))
        .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains("pitcrew"))
}

/// Locks held by this run; released when dropped.
#[derive(Debug)]
pub struct ClusterLocks {
    held: Vec<PathBuf>,
    me: LockHolder,
}

impl ClusterLocks {
    pub fn holder(&self) -> &LockHolder {
        &self.me
    }
}

impl Drop for ClusterLocks {
    fn drop(&mut self) {
        for path in &self.held {
            // Only remove what is still ours.
            if read_holder(path).is_some_and(|h| h == self.me) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

fn read_holder(path: &Path) -> Option<LockHolder> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn create(path: &Path, me: &LockHolder) -> std::io::Result<bool> {
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(mut file) => {
            file.write_all(serde_json::to_string(me).map_err(std::io::Error::other)?.as_bytes())?;
            file.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Takes the locks of `clusters` for `me`, all or none. Returns the stale
/// holders that were taken over (to record in the audit trail).
pub fn acquire(
    dir: &Path,
    clusters: &[String],
    me: &LockHolder,
    break_stale: bool,
) -> Result<(ClusterLocks, Vec<(String, LockHolder)>), LockError> {
    let mut locks = ClusterLocks { held: Vec::new(), me: me.clone() };
    let mut broken = Vec::new();
    for cluster in clusters {
        let path = dir.join(format!("{cluster}.lock"));
        let io = |source| LockError::Io { path: path.display().to_string(), source };
        loop {
            if create(&path, me).map_err(io)? {
                locks.held.push(path.clone());
                break;
            }
            let Some(holder) = read_holder(&path) else {
                // Written by a process that died before finishing the file.
                std::fs::remove_file(&path).map_err(io)?;
                continue;
            };
            let same_run = holder.run == me.run;
            if holder_alive(&holder) && !(same_run && holder.pid == me.pid) {
                return Err(LockError::Held { cluster: cluster.clone(), holder });
            }
            if !same_run && !break_stale {
                return Err(LockError::Stale { cluster: cluster.clone(), holder });
            }
            std::fs::remove_file(&path).map_err(io)?;
            if !same_run {
                broken.push((cluster.clone(), holder));
            }
        }
    }
    Ok((locks, broken))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(run: &str, pid: u32) -> LockHolder {
        LockHolder { run: run.into(), pid, host: host_name(), since: "now".into() }
    }

    /// A pid no process has.
    const DEAD: u32 = u32::MAX - 1;

    #[test]
    fn a_live_holder_blocks_and_a_dead_one_needs_break_lock() {
        let dir = tempfile::tempdir().expect("tmp");
        let clusters = vec!["web".to_string()];
        // The test binary's name contains "pitcrew", so its own pid is live.
        let live = acquire(dir.path(), &clusters, &holder("live", std::process::id()), false).expect("free");
        match acquire(dir.path(), &clusters, &holder("b", DEAD), false) {
            Err(LockError::Held { holder, .. }) => assert_eq!(holder.run, "live"),
            other => panic!("expected a held lock, got {other:?}"),
        }
        drop(live);
        let (dead, _) = acquire(dir.path(), &clusters, &holder("a", DEAD), false).expect("free again");
        std::mem::forget(dead);
        match acquire(dir.path(), &clusters, &holder("b", DEAD - 1), false) {
            Err(LockError::Stale { holder, .. }) => assert_eq!(holder.run, "a"),
            other => panic!("expected a stale lock, got {other:?}"),
        }
        let (_second, broken) = acquire(dir.path(), &clusters, &holder("b", DEAD - 1), true).expect("broken");
        assert_eq!(broken[0].1.run, "a");
    }

    #[test]
    fn the_same_run_takes_its_own_stale_lock_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let clusters = vec!["db".to_string()];
        let (first, _) = acquire(dir.path(), &clusters, &holder("r", DEAD), false).expect("free");
        std::mem::forget(first);
        let (_again, broken) = acquire(dir.path(), &clusters, &holder("r", DEAD - 1), false).expect("resume takes it");
        assert!(broken.is_empty());
    }
}
