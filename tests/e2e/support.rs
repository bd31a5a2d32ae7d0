//! Drives the built `pitcrew` binary: write files, set arguments, run, and
//! read the exit code, stderr and the `--json` summary.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub const DEMO: &str = "playbooks/inventories/demo.yaml";

/// The repository root (tests run from the package directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A pitcrew invocation under construction.
pub struct Pitcrew {
    args: Vec<String>,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// What an invocation printed and returned.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Pitcrew {
    pub fn new() -> Self {
        Self { args: Vec::new(), dir: tempfile::tempdir().expect("temp dir"), env: Vec::new() }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// This invocation's private state directory (journals, locks, sim state).
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// This invocation's temp dir.
    pub fn dir_path(&self) -> std::path::PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Writes a file in this invocation's temp dir and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("test file directory");
        }
        std::fs::write(&path, text).expect("write test file");
        path.display().to_string()
    }

    /// `rehearse PLAYBOOK -i DEMO --json` plus `extra`.
    pub fn rehearse(playbook: &str, extra: &[&str]) -> Output {
        Self::new().args(["rehearse", playbook, "-i", DEMO, "--json", "-q"]).args(extra).run()
    }

    /// The command, with a private state dir unless one was given.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pitcrew"));
        command
            .args(&self.args)
            .current_dir(root())
            .env_remove("PITCREW_LIB")
            .env("PITCREW_STATE_DIR", self.state_dir());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    pub fn run(self) -> Output {
        let out = self.command().output().expect("run pitcrew");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Output {
    /// The `--json` summary.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }

    /// Fails with the whole output when the exit code differs.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    pub fn expect_stderr(&self, needle: &str) -> &Self {
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", self.stderr);
        self
    }
}

/// One node of the JSON summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub version: String,
    pub version_before: String,
    pub serving: bool,
    pub role: Option<String>,
}

pub fn nodes(json: &Value) -> Vec<Node> {
    json["nodes"]
        .as_array()
        .expect("nodes array")
        .iter()
        .map(|n| Node {
            name: n["node"].as_str().expect("node").to_string(),
            version: n["version"].as_str().expect("version").to_string(),
            version_before: n["version_before"].as_str().expect("version_before").to_string(),
            serving: n["serving"].as_bool().expect("serving"),
            role: n["role"].as_str().map(str::to_string),
        })
        .collect()
}

/// The service runs only on unpatched nodes: every serving node has the
/// version it had before the run, and at least `min_serving` serve.
pub fn assert_service_on_unpatched_nodes(json: &Value, min_serving: usize) {
    let nodes = nodes(json);
    let serving: Vec<&Node> = nodes.iter().filter(|n| n.serving).collect();
    assert!(serving.len() >= min_serving, "only {} node(s) serve: {nodes:#?}", serving.len());
    for n in serving {
        assert_eq!(n.version, n.version_before, "{} serves users on a patched version: {nodes:#?}", n.name);
    }
}

pub fn playbook(name: &str) -> String {
    Path::new("playbooks").join(name).display().to_string()
}

/// Starts `pitcrew` to stop at `CALL:PHASE` (the runtime's test hook) and
/// waits until it says it is there. `None` when it finished first.
pub fn spawn_paused(args: &[&str], state_dir: &Path, pause: &str) -> Option<std::process::Child> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Pitcrew::new()
        .args(args)
        .env("PITCREW_STATE_DIR", &state_dir.display().to_string())
        .env("PITCREW_TEST_PAUSE_AT", pause)
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pitcrew");
    let stderr = child.stderr.take().expect("stderr");
    if BufReader::new(stderr).lines().map_while(Result::ok).any(|line| line.starts_with("PITCREW-PAUSED")) {
        Some(child)
    } else {
        child.wait().expect("reap");
        None
    }
}

/// Stops `pitcrew` at `CALL:PHASE` and SIGKILLs it there. Returns false
/// when the run finished without reaching that point.
pub fn kill_at(args: &[&str], state_dir: &Path, pause: &str) -> bool {
    let Some(mut child) = spawn_paused(args, state_dir, pause) else { return false };
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    true
}

/// A state dir shared by several invocations.
pub fn in_state(state_dir: &Path, args: &[&str]) -> Output {
    Pitcrew::new().args(args).env("PITCREW_STATE_DIR", &state_dir.display().to_string()).run()
}

/// The run ids of a state dir, oldest first.
pub fn run_ids(state_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(state_dir.join("runs"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".jsonl").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The records of a run's journal.
pub fn records(state_dir: &Path, run: &str) -> Vec<Value> {
    std::fs::read_to_string(state_dir.join("runs").join(format!("{run}.jsonl")))
        .expect("journal")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect()
}

/// The call numbers of the steps (intents) of a clean rehearsal.
pub fn step_calls(args: &[&str]) -> Vec<u64> {
    let dir = tempfile::tempdir().expect("tmp");
    in_state(dir.path(), args);
    let run = run_ids(dir.path()).pop().expect("a run");
    records(dir.path(), &run).iter().filter(|r| r["kind"] == "intent").filter_map(|r| r["call"].as_u64()).collect()
}
