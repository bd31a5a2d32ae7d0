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
        Self { args: Vec::new(), dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Writes a file in this invocation's temp dir and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write test file");
        path.display().to_string()
    }

    /// `rehearse PLAYBOOK -i DEMO --json` plus `extra`.
    pub fn rehearse(playbook: &str, extra: &[&str]) -> Output {
        Self::new().args(["rehearse", playbook, "-i", DEMO, "--json", "-q"]).args(extra).run()
    }

    pub fn run(self) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
            .args(&self.args)
            .current_dir(root())
            .env_remove("PITCREW_LIB")
            .output()
            .expect("run pitcrew");
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
