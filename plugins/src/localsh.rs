//! `localsh`: a pool of persistent local shells that run scripts with the
//! semantics of `sh -c SCRIPT`, without an exec of `/bin/sh` per script.
//!
//! Why: a fresh `sh -c` costs a fork and an exec of the shell for every
//! command, which dominates cheap commands such as health checks polled
//! every half second. A shell script pays only a fork per command; this
//! pool pays the same by keeping one long-lived `sh -s` per concurrent
//! script and feeding it scripts on its stdin. On the 2-core development
//! machine a builtin such as `test -f` takes about 0.4 ms against 0.9 ms
//! for `sh -c`; the floor is the shell's fork of the subshell, about
//! 0.2 ms there (`cargo bench --bench localsh` prints the figures).
//!
//! Protocol. Each shell is `sh -s` with its stdin and stdout piped to us,
//! its stderr on `/dev/null`, in a process group of its own, with a private
//! directory (mode 0700) for the output of its scripts. A script is sent as
//! one command:
//!
//! ```text
//! ( eval '<script, each ' written '\''>' ) </dev/null >'<dir>/out' 2>'<dir>/err'; echo "<nonce> $?"
//! ```
//!
//! - The subshell keeps `exit`, `cd`, variables, `set -e`, traps and
//!   functions from leaking into the next script or ending the shell.
//! - `eval` of a quoted copy means the shell itself always parses a valid
//!   command: a syntax error in the script fails only that script (status
//!   2, the message on its stderr), as it would under `sh -c`.
//! - The script's stdin is `/dev/null`, so it can never read the protocol.
//! - Its stdout and stderr go to files, read (and removed) once the marker
//!   arrives: they may be binary, large, or lack a final newline, and a
//!   background process the script left holding them cannot delay us.
//! - The shell's own stdout carries only marker lines `<nonce> <status>`;
//!   the nonce is random per shell. Anything else, or end of file, means the
//!   shell is lost: the run fails with [`PoolError::Lost`] and the shell is
//!   not reused.
//!
//! On timeout or cancellation the whole process group (the shell and
//! everything it started) is killed with SIGKILL and the shell is reaped
//! and discarded, so the caller gets an answer within milliseconds of the
//! deadline.
//!
//! Differences from `sh -c` that a script can notice:
//! - `$$` is the persistent shell's pid, the same for scripts run in turn
//!   by one shell; `kill $$` ends that shell (the run is [`PoolError::Lost`]).
//! - The environment and working directory are pitcrew's as they were
//!   when the shell started, not when the script runs.
//! - Error messages of the shell read `sh: 1: eval: ...` for `sh: 1: ...`.
//! - Background processes a script leaves behind stay in the shell's
//!   process group: a later script of the same shell that times out takes
//!   them down with it.
//! - The shells are not in pitcrew's process group, so a Ctrl-C at the
//!   terminal reaches them only through cancellation.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

/// Idle shells kept for reuse; a shell finishing when this many wait is
/// ended instead.
const MAX_IDLE: usize = 64;

/// How long to wait for a killed shell to be reaped before leaving it to
/// tokio's orphan reaper (a process stuck in the kernel may take longer).
const REAP_WAIT: Duration = Duration::from_secs(1);

/// What a script did: its exit status and everything it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The script's exit status, as `sh -c` would exit with it: a script
    /// killed by signal N gives 128+N. Always `Some` today; an `Option` as
    /// [`std::process::ExitStatus::code`] is.
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A script could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The script did not finish in time; its shell and everything the
    /// shell started were killed.
    #[error("the script did not finish within {}", humantime::format_duration(*after))]
    Timeout { after: Duration },
    /// The cancellation token fired; the shell and everything it started
    /// were killed (or, when it had fired before the call, nothing ran).
    #[error("the script was cancelled")]
    Cancelled,
    /// No shell could be started (or its private directory created).
    #[error("cannot start a local shell: {0}")]
    Start(#[source] io::Error),
    /// The shell died or broke the protocol; it is not reused. Whether the
    /// script ran, or how far, is unknown.
    #[error("the local shell was lost: {0}")]
    Lost(String),
    /// A NUL byte cannot be passed to a shell (`sh -c` refuses it too).
    #[error("the script contains a NUL byte")]
    NulByte,
}

/// Persistent local shells, one per script running at a time: a run takes
/// an idle shell (or starts one) and gives it back when the script has
/// finished. Dropping the pool ends its idle shells.
#[derive(Default)]
pub struct ShellPool {
    /// Last in, first out: the most recently used shell is the warmest.
    idle: Mutex<Vec<Shell>>,
    started: AtomicUsize,
}

impl ShellPool {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `script` (shell text, exactly what `sh -c script` would run) in
    /// an idle shell of the pool, starting one if none is idle, and returns
    /// its exit status and what it wrote. A failed script is an `Ok` with
    /// its status; errors are for scripts that could not be run to the end.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pitcrew_plugins::localsh::ShellPool;
    /// use tokio_util::sync::CancellationToken;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), pitcrew_plugins::localsh::PoolError> {
    /// let pool = ShellPool::new();
    /// let ran = pool.run("echo hi; echo oops >&2; exit 3", Duration::from_secs(5), &CancellationToken::new()).await?;
    /// assert_eq!(ran.status, Some(3));
    /// assert_eq!((ran.stdout.as_slice(), ran.stderr.as_slice()), (&b"hi\n"[..], &b"oops\n"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run(&self, script: &str, timeout: Duration, cancel: &CancellationToken) -> Result<Output, PoolError> {
        if script.contains('\0') {
            return Err(PoolError::NulByte);
        }
        if cancel.is_cancelled() {
            return Err(PoolError::Cancelled);
        }
        let mut shell = match self.take_idle() {
            Some(shell) => shell,
            None => {
                let shell = Shell::start().map_err(PoolError::Start)?;
                self.started.fetch_add(1, Ordering::Relaxed);
                shell
            }
        };
        let status = tokio::select! {
            status = shell.exchange(script) => status,
            () = tokio::time::sleep(timeout) => Err(PoolError::Timeout { after: timeout }),
            () = cancel.cancelled() => Err(PoolError::Cancelled),
        };
        let output = match status {
            Ok(status) => shell.collect(status),
            Err(e) => Err(e),
        };
        match output {
            Ok(output) => {
                self.give_back(shell);
                Ok(output)
            }
            Err(e) => {
                shell.kill().await;
                Err(e)
            }
        }
    }

    /// How many shells this pool has started so far.
    pub fn shells_started(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }

    /// An idle shell that is still alive (one killed while idle is dropped).
    fn take_idle(&self) -> Option<Shell> {
        loop {
            let mut shell = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()?;
            if shell.is_alive() {
                return Some(shell);
            }
        }
    }

    fn give_back(&self, shell: Shell) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(shell);
        }
    }

    #[cfg(test)]
    fn idle_dirs(&self) -> Vec<PathBuf> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|s| s.dir.0.clone()).collect()
    }
}

/// One persistent `sh -s` and its protocol state.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    nonce: String,
    /// What follows the quoted script on its command line: the subshell's
    /// redirections and the marker.
    tail: Vec<u8>,
    /// A script was sent and its marker not yet read: dropping the shell
    /// now must end what the script started.
    busy: bool,
    /// Declared last so it is removed after the shell is killed.
    dir: PrivateDir,
}

impl Shell {
    fn start() -> io::Result<Self> {
        let dir = PrivateDir::create()?;
        // The absolute path: no search of PATH for every shell started.
        let mut child = Command::new(if std::path::Path::new("/bin/sh").exists() { "/bin/sh" } else { "sh" })
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().expect("the shell's stdin is piped");
        let stdout = BufReader::new(child.stdout.take().expect("the shell's stdout is piped"));
        let nonce = format!("pitcrew-{}", random_hex());
        let mut tail = b" ) </dev/null >".to_vec();
        push_single_quoted(&mut tail, dir.stdout().as_os_str().as_bytes());
        tail.extend_from_slice(b" 2>");
        push_single_quoted(&mut tail, dir.stderr().as_os_str().as_bytes());
        tail.extend_from_slice(format!("; echo \"{nonce} $?\"\n").as_bytes());
        Ok(Self { child, stdin, stdout, nonce, tail, busy: false, dir })
    }

    fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends the script and waits for its marker; the script's status.
    async fn exchange(&mut self, script: &str) -> Result<i32, PoolError> {
        let mut command = Vec::with_capacity(script.len() + self.tail.len() + 16);
        command.extend_from_slice(b"( eval ");
        push_single_quoted(&mut command, script.as_bytes());
        command.extend_from_slice(&self.tail);
        self.busy = true;
        self.stdin
            .write_all(&command)
            .await
            .map_err(|e| PoolError::Lost(format!("cannot send the script to the shell: {e}")))?;
        let mut reply = String::new();
        let read = self
            .stdout
            .read_line(&mut reply)
            .await
            .map_err(|e| PoolError::Lost(format!("cannot read the shell's answer: {e}")))?;
        if read == 0 {
            return Err(PoolError::Lost("the shell exited before the script finished".into()));
        }
        let status = parse_marker(&reply, &self.nonce)
            .ok_or_else(|| PoolError::Lost(format!("the shell answered {reply:?} instead of its marker")))?;
        self.busy = false;
        Ok(status)
    }

    /// The finished script's output, read from the shell's directory and
    /// removed: a process the script left running may still hold the files,
    /// and must not write into the next script's output.
    ///
    /// Read in place, not on tokio's blocking pool: the files were just
    /// written and sit in the page cache, so reading them is a memory copy,
    /// and the hand-off to the pool cost about 40 µs, a tenth of a run.
    fn collect(&self, status: i32) -> Result<Output, PoolError> {
        let take = |path: PathBuf| {
            let bytes = std::fs::read(&path);
            let _ = std::fs::remove_file(&path);
            bytes.map_err(|e| PoolError::Lost(format!("cannot read the script's output {}: {e}", path.display())))
        };
        let (stdout, stderr) = (take(self.dir.stdout()), take(self.dir.stderr()));
        Ok(Output { status: Some(status), stdout: stdout?, stderr: stderr? })
    }

    /// Kills the shell's process group and reaps the shell.
    async fn kill(mut self) {
        self.kill_group();
        let _ = tokio::time::timeout(REAP_WAIT, self.child.wait()).await;
    }

    fn kill_group(&self) {
        // Only while the shell is not reaped: until then its pid, which is
        // the group's id, cannot be given to another process.
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // A run dropped mid-script: end what the script started. An idle
        // shell is ended alone by kill_on_drop, so that processes earlier
        // scripts started in the background live on, as under `sh -c`.
        if self.busy {
            self.kill_group();
        }
    }
}

/// A directory only this user can enter, removed with what it holds when
/// dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    /// In `/dev/shm` where there is one (creating and removing a file
    /// there is a memory operation, against a costly inode search on a
    /// busy ext4 `/tmp`), else in the temporary directory.
    fn create() -> io::Result<Self> {
        let name = format!("pitcrew-sh-{}-{}", std::process::id(), random_hex());
        // `create`, not `create_all`: a directory someone else made in our
        // place is an error, never used.
        let make = |path: PathBuf| std::fs::DirBuilder::new().mode(0o700).create(&path).map(|()| Self(path));
        make(std::path::Path::new("/dev/shm").join(&name)).or_else(|_| make(std::env::temp_dir().join(&name)))
    }

    /// Where a script's stdout goes.
    fn stdout(&self) -> PathBuf {
        self.0.join("out")
    }

    /// Where a script's stderr goes.
    fn stderr(&self) -> PathBuf {
        self.0.join("err")
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `text` as one single-quoted shell word: inside single quotes nothing is
/// special but the closing quote, which is written `'\''`.
fn push_single_quoted(line: &mut Vec<u8>, text: &[u8]) {
    line.push(b'\'');
    for &byte in text {
        if byte == b'\'' {
            line.extend_from_slice(b"'\\''");
        } else {
            line.push(byte);
        }
    }
    line.push(b'\'');
}

/// The status in a marker line `<nonce> <status>\n`.
fn parse_marker(line: &str, nonce: &str) -> Option<i32> {
    line.strip_suffix('\n')?.strip_prefix(nonce)?.strip_prefix(' ')?.parse().ok()
}

/// 64 unpredictable bits as hex: std's `RandomState` keys are random per
/// process and thread, and the counter and clock make each call differ.
fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(since) = SystemTime::now().duration_since(UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    const LONG: Duration = Duration::from_secs(20);

    async fn run(pool: &ShellPool, script: &str) -> Output {
        pool.run(script, LONG, &CancellationToken::new()).await.expect("the script runs")
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).expect("utf-8 output")
    }

    /// The process is gone (or a zombie nobody reaps yet).
    fn gone(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    async fn wait_gone(pid: i32) -> bool {
        for _ in 0..200 {
            if gone(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[test]
    fn the_pool_can_be_shared() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<ShellPool>();
    }

    #[test]
    fn quoting_survives_quotes() {
        let mut line = Vec::new();
        push_single_quoted(&mut line, b"it's");
        assert_eq!(line, b"'it'\\''s'");
    }

    #[test]
    fn markers_need_the_nonce() {
        assert_eq!(parse_marker("abc 3\n", "abc"), Some(3));
        assert_eq!(parse_marker("abc 130\n", "abc"), Some(130));
        assert_eq!(parse_marker("abd 3\n", "abc"), None);
        assert_eq!(parse_marker("abc 3", "abc"), None);
        assert_eq!(parse_marker("abc x\n", "abc"), None);
        assert_ne!(random_hex(), random_hex());
    }

    #[tokio::test]
    async fn status_and_output_of_simple_commands() {
        let pool = ShellPool::new();
        let ran = run(&pool, "echo hello; exit 3").await;
        assert_eq!(ran, Output { status: Some(3), stdout: b"hello\n".to_vec(), stderr: Vec::new() });
        assert_eq!(run(&pool, "true").await.status, Some(0));
        assert_eq!(run(&pool, "false").await.status, Some(1));
        assert_eq!(run(&pool, "no-such-command-pitcrew").await.status, Some(127));
    }

    #[tokio::test]
    async fn output_may_be_binary_and_lack_a_newline() {
        let pool = ShellPool::new();
        assert_eq!(run(&pool, "printf abc").await.stdout, b"abc");
        assert_eq!(run(&pool, r"printf '\000\377'").await.stdout, [0, 255]);
        assert_eq!(run(&pool, "head -c 1000000 /dev/zero").await.stdout.len(), 1_000_000);
    }

    #[tokio::test]
    async fn stdout_and_stderr_are_separate() {
        let pool = ShellPool::new();
        let ran = run(&pool, "echo out; echo err >&2; printf more").await;
        assert_eq!(text(&ran.stdout), "out\nmore");
        assert_eq!(text(&ran.stderr), "err\n");
    }

    #[tokio::test]
    async fn exit_ends_only_the_script() {
        let pool = ShellPool::new();
        assert_eq!(run(&pool, "exit 7").await.status, Some(7));
        assert_eq!(text(&run(&pool, "echo next").await.stdout), "next\n");
        assert_eq!(run(&pool, "exec true").await.status, Some(0));
        assert_eq!(run(&pool, "exec sh -c 'kill -KILL $$'").await.status, Some(137));
        assert_eq!(text(&run(&pool, "echo still").await.stdout), "still\n");
        assert_eq!(pool.shells_started(), 1);
    }

    #[tokio::test]
    async fn a_syntax_error_fails_only_its_script() {
        let pool = ShellPool::new();
        let ran = run(&pool, "if then").await;
        assert_eq!(ran.status, Some(2));
        assert!(text(&ran.stderr).contains("Syntax error"), "{:?}", text(&ran.stderr));
        assert_eq!(run(&pool, "echo 'unclosed").await.status, Some(2));
        assert_eq!(text(&run(&pool, "echo fine").await.stdout), "fine\n");
        assert_eq!(pool.shells_started(), 1);
    }

    #[tokio::test]
    async fn stdin_is_empty() {
        let pool = ShellPool::new();
        let started = Instant::now();
        let ran = run(&pool, "cat; read line; echo \"read: $?\"").await;
        assert_eq!(text(&ran.stdout), "read: 1\n");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(text(&run(&pool, "echo after").await.stdout), "after\n");
    }

    #[tokio::test]
    async fn nothing_leaks_into_the_next_script() {
        let pool = ShellPool::new();
        let first = run(&pool, "cd /; X=1; export Y=2; f() { :; }; set -e; trap 'echo trapped' EXIT; alias l=ls").await;
        assert_eq!(text(&first.stdout), "trapped\n");
        let next = run(
            &pool,
            "pwd; echo \"${X-unset} ${Y-unset}\"; command -v f || echo no-f; false; echo after-false; alias l || true",
        )
        .await;
        let cwd = std::env::current_dir().expect("a working directory");
        assert_eq!(text(&next.stdout), format!("{}\nunset unset\nno-f\nafter-false\n", cwd.display()));
        assert_eq!(pool.shells_started(), 1);
    }

    #[tokio::test]
    async fn scripts_run_verbatim() {
        let script = r#"printf '%s\n' 'it'\''s' "a \"b\" \$HOME" 'back\slash\\' "$((1 + 2))" '$(id)'
cat <<'EOF'
x'y"z $NOPE \t `id`
EOF
echo done\
line
v='multi
line'; echo "$v"; echo "${0##*/}" $#
exit 4"#;
        let expected = std::process::Command::new("sh").arg("-c").arg(script).output().expect("sh -c runs");
        let ran = run(&ShellPool::new(), script).await;
        assert_eq!(text(&ran.stdout), text(&expected.stdout));
        assert_eq!(ran.status, expected.status.code());
        assert_eq!(ran.status, Some(4));
    }

    #[tokio::test]
    async fn a_nul_byte_is_refused() {
        let pool = ShellPool::new();
        assert!(matches!(pool.run("echo a\0b", LONG, &CancellationToken::new()).await, Err(PoolError::NulByte)));
        assert_eq!(pool.shells_started(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timeout_kills_the_script_and_what_it_started() {
        let pool = ShellPool::new();
        let pids = std::env::temp_dir().join(format!("pitcrew-localsh-test-{}", random_hex()));
        let script = format!("sleep 30 & echo $! >'{}'; sleep 30", pids.display());
        let started = Instant::now();
        let ran = pool.run(&script, Duration::from_millis(300), &CancellationToken::new()).await;
        assert!(matches!(ran, Err(PoolError::Timeout { .. })), "{ran:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        let child: i32 =
            std::fs::read_to_string(&pids).expect("the script wrote its child").trim().parse().expect("a pid");
        let _ = std::fs::remove_file(&pids);
        assert!(wait_gone(child).await, "the background sleep survived the timeout");
        assert_eq!(pool.idle_dirs(), Vec::<PathBuf>::new(), "a timed out shell is not reused");
        assert_eq!(text(&run(&pool, "echo fresh").await.stdout), "fresh\n");
        assert_eq!(pool.shells_started(), 2);
    }

    #[tokio::test]
    async fn a_background_process_does_not_hold_the_script() {
        let pool = ShellPool::new();
        let started = Instant::now();
        let ran = run(&pool, "sleep 30 & echo $!").await;
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = text(&ran.stdout).trim().parse().expect("a pid");
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        assert_eq!(text(&run(&pool, "echo next").await.stdout), "next\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancellation_kills_the_script() {
        let pool = ShellPool::new();
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        let ran = pool.run("sleep 30", LONG, &cancel).await;
        assert!(matches!(ran, Err(PoolError::Cancelled)), "{ran:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        assert!(matches!(pool.run("true", LONG, &cancel).await, Err(PoolError::Cancelled)));
        assert_eq!(pool.shells_started(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scripts_get_shells_of_their_own() {
        let pool = Arc::new(ShellPool::new());
        let started = Instant::now();
        let runs: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { run(&pool, "sleep 0.2; echo $$").await })
            })
            .collect();
        let mut shells = Vec::new();
        for handle in runs {
            shells.push(handle.await.expect("the run task").stdout);
        }
        assert!(started.elapsed() < Duration::from_millis(1500), "took {:?}", started.elapsed());
        shells.sort();
        shells.dedup();
        assert_eq!(shells.len(), 8);
        assert_eq!(pool.shells_started(), 8);
        assert_eq!(pool.idle_dirs().len(), 8);
        run(&pool, "true").await;
        assert_eq!(pool.shells_started(), 8, "an idle shell is reused");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_shell_is_lost_and_replaced() {
        let pool = Arc::new(ShellPool::new());
        let shell: i32 = text(&run(&pool, "echo $$").await.stdout).trim().parse().expect("a pid");
        let running = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run("sleep 30", LONG, &CancellationToken::new()).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        nix::sys::signal::kill(Pid::from_raw(shell), Signal::SIGKILL).expect("the shell can be killed");
        let ran = running.await.expect("the run task");
        assert!(matches!(ran, Err(PoolError::Lost(_))), "{ran:?}");
        assert_eq!(text(&run(&pool, "echo back").await.stdout), "back\n");
        assert_eq!(pool.shells_started(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shell_killed_while_idle_is_replaced() {
        let pool = ShellPool::new();
        let shell: i32 = text(&run(&pool, "echo $$").await.stdout).trim().parse().expect("a pid");
        nix::sys::signal::kill(Pid::from_raw(shell), Signal::SIGKILL).expect("the shell can be killed");
        assert!(wait_gone(shell).await);
        assert_eq!(text(&run(&pool, "echo back").await.stdout), "back\n");
        assert_eq!(pool.shells_started(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_pool_ends_its_shells() {
        let pool = ShellPool::new();
        let shell: i32 = text(&run(&pool, "echo $$").await.stdout).trim().parse().expect("a pid");
        let dirs = pool.idle_dirs();
        assert_eq!(dirs.len(), 1);
        assert!(dirs[0].is_dir());
        drop(pool);
        assert!(wait_gone(shell).await, "the shell outlived its pool");
        assert!(!dirs[0].exists(), "the shell's directory outlived its pool");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_run_kills_its_script() {
        let pool = ShellPool::new();
        let pids = std::env::temp_dir().join(format!("pitcrew-localsh-test-{}", random_hex()));
        let script = format!("echo $$ >'{}'; exec sleep 30", pids.display());
        let cancel = CancellationToken::new();
        let abandoned = tokio::time::timeout(Duration::from_millis(300), pool.run(&script, LONG, &cancel));
        assert!(abandoned.await.is_err(), "the run was abandoned before the script finished");
        let shell: i32 = std::fs::read_to_string(&pids).expect("the script wrote").trim().parse().expect("a pid");
        let _ = std::fs::remove_file(&pids);
        assert!(wait_gone(shell).await, "an abandoned shell survived");
        assert_eq!(pool.idle_dirs(), Vec::<PathBuf>::new());
    }
}
