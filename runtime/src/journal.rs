//! The audit trail: one append-only JSON Lines file per run, every record
//! carrying the SHA-256 of the previous one.
//!
//! It is also the write-ahead journal. A step's intent is written and
//! fsynced before its adapter is called, and its outcome is written right
//! after (made durable by the next fsync), so a run that dies can be
//! resumed: completed calls replay from the journal, a call with an intent
//! and no outcome is reconciled against the adapters.
//!
//! A record's hash covers the exact bytes of its line up to the hash field:
//! `line = body[..len-1] + ,"hash":"<sha256(body)>"}` where `body` is the
//! record serialized without its hash. Editing any byte, removing, reordering
//! or inserting a line breaks the chain; so does anything after `end`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::StepError;

/// The hash the first record of a run points back to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Keys whose values never reach the audit trail.
const SECRET_WORDS: &[&str] =
    &["password", "passwd", "secret", "token", "apikey", "api_key", "credential", "private_key"];

/// Replaces the value of every key that names a secret with `[redacted]`,
/// at any depth.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let lower = key.to_ascii_lowercase();
                if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
                    *v = Value::String("[redacted]".into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The state directory: `runs/` (journals, twins), `locks/`, `facts/`, `sim/`.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// The state directory or a journal cannot be used.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StateError {
    #[error("cannot use state directory {path}: {source}")]
    #[diagnostic(
        code(pitcrew::state::dir),
        help("pass --state-dir DIR or set PITCREW_STATE_DIR to a writable directory")
    )]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no run `{run}` in {dir}")]
    #[diagnostic(code(pitcrew::state::unknown_run), help("`pitcrew runs` lists the runs of this state directory"))]
    UnknownRun { run: String, dir: String },
    #[error("cannot read journal {path}: {source}")]
    #[diagnostic(code(pitcrew::state::read))]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write journal {path}: {source}")]
    #[diagnostic(code(pitcrew::state::write), help("check free space and permissions; the step was not started"))]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path}, record {line}: {message}")]
    #[diagnostic(
        code(pitcrew::state::corrupt),
        help("`pitcrew audit verify RUN` shows the first bad record; nothing was changed")
    )]
    Corrupt { path: String, line: usize, message: String },
}

impl StateDir {
    /// Opens (creating if needed) a state directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StateError> {
        let root = root.into();
        for sub in ["runs", "locks", "facts", "sim"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(|source| StateError::Dir { path: dir.display().to_string(), source })?;
        }
        // Fail now, not at the first intent, when the directory is read-only.
        let probe = root.join("runs").join(".writable");
        File::create(&probe)
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|source| StateError::Dir { path: root.display().to_string(), source })?;
        Ok(Self { root })
    }

    /// Opens a state directory that must already exist (read-only commands).
    pub fn existing(root: impl Into<PathBuf>) -> Result<Self, StateError> {
        let root = root.into();
        let runs = root.join("runs");
        std::fs::read_dir(&runs).map_err(|source| StateError::Dir { path: runs.display().to_string(), source })?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn journal_path(&self, run: &str) -> PathBuf {
        self.root.join("runs").join(format!("{run}.jsonl"))
    }

    pub fn twin_path(&self, run: &str) -> PathBuf {
        self.root.join("runs").join(format!("{run}.twin.json"))
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    pub fn facts_dir(&self) -> PathBuf {
        self.root.join("facts")
    }

    pub fn sim_dir(&self) -> PathBuf {
        self.root.join("sim")
    }

    /// The journal of an existing run; accepts a unique prefix of the id.
    pub fn find_run(&self, run: &str) -> Result<PathBuf, StateError> {
        let exact = self.journal_path(run);
        if exact.exists() {
            return Ok(exact);
        }
        let matches: Vec<PathBuf> =
            self.run_ids()?.into_iter().filter(|id| id.starts_with(run)).map(|id| self.journal_path(&id)).collect();
        match matches.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(StateError::UnknownRun { run: run.to_string(), dir: self.root.display().to_string() }),
        }
    }

    /// Every run id, oldest first (ids start with a UTC timestamp).
    pub fn run_ids(&self) -> Result<Vec<String>, StateError> {
        let dir = self.root.join("runs");
        let entries =
            std::fs::read_dir(&dir).map_err(|source| StateError::Dir { path: dir.display().to_string(), source })?;
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".jsonl")).map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// What the run header records about the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunHeader {
    pub operator: String,
    pub host: String,
    pub pid: u32,
    /// `rehearsal` or `run`.
    pub mode: String,
    pub playbook: String,
    pub playbook_sha256: String,
    pub inventory: String,
    pub inventory_sha256: String,
    pub params: Value,
    pub faults: Vec<String>,
    pub rollback_on_failure: bool,
    pub lib: Vec<String>,
    pub clusters: Vec<String>,
    /// The directory the run started in; relative paths resolve from it.
    #[serde(default)]
    pub cwd: String,
    /// Script limits the run was started with, so a resume keeps them.
    #[serde(default)]
    pub max_operations: Option<u64>,
    #[serde(default)]
    pub deadline_s: Option<f64>,
    /// The modules the playbook imported: import path -> SHA-256 of its text.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub modules: std::collections::BTreeMap<String, String>,
}

/// One record's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    Header(RunHeader),
    /// The run was resumed by another process.
    Resumed {
        operator: String,
        host: String,
        pid: u32,
        repaired: Option<String>,
    },
    /// A lock held by a dead run was taken over with --break-lock.
    LockBroken {
        cluster: String,
        holder: Value,
    },
    /// A step is about to call its adapter.
    Intent {
        call: u64,
        cluster: String,
        node: Option<String>,
        action: String,
        params: Value,
    },
    /// What the adapter call did.
    Outcome {
        call: u64,
        cluster: String,
        node: Option<String>,
        action: String,
        ok: bool,
        result: Value,
        error: Option<StepError>,
        duration_s: f64,
        /// Found already done on resume, from the adapters' state.
        reconciled: bool,
        /// Commands the adapter ran (status, truncated output).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        commands: Vec<Value>,
    },
    /// A guard refused a step; nothing was touched.
    Refused {
        call: u64,
        cluster: String,
        node: Option<String>,
        action: String,
        error: StepError,
    },
    /// An observation the playbook saw (replayed on resume).
    Read {
        call: u64,
        what: String,
        target: String,
        result: Value,
    },
    /// A fact snapshot of a node.
    Facts {
        node: String,
        cluster: String,
        reason: String,
        facts: Value,
    },
    Log {
        text: String,
    },
    RollbackStarted {
        reason: String,
        steps: usize,
    },
    RollbackFinished {
        ok: bool,
    },
    /// The run finished; nothing may follow.
    End {
        result: String,
        exit_code: u8,
        /// The run's summary (steps, patched nodes, traffic, rollback,
        /// final node states, the error), for reports.
        #[serde(default, skip_serializing_if = "Value::is_null")]
        outcome: Value,
    },
    /// A notification and what became of it at each sink.
    Notified {
        event: String,
        data: Value,
        deliveries: Vec<Value>,
    },
}

/// A record as written: sequence, times, run id, body, chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub ts: String,
    /// Seconds on the run's clock (virtual in a rehearsal).
    pub vt: f64,
    pub run: String,
    #[serde(flatten)]
    pub body: Body,
    pub prev: String,
}

/// A record read back, with its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub record: Record,
    pub hash: String,
}

fn seal(record: &Record) -> Result<(String, String), serde_json::Error> {
    let body = serde_json::to_string(record)?;
    let hash = sha256_hex(body.as_bytes());
    let line = format!("{},\"hash\":\"{hash}\"}}\n", &body[..body.len() - 1]);
    Ok((line, hash))
}

/// Appends records to one run's journal, fsyncing each.
#[derive(Debug)]
pub struct JournalWriter {
    path: PathBuf,
    file: File,
    run: String,
    seq: u64,
    prev: String,
    /// fsync after every record (off only for benchmarks of the chain itself).
    sync: bool,
}

impl JournalWriter {
    /// Starts a new journal; refuses to overwrite an existing one.
    pub fn create(path: &Path, run: &str) -> Result<Self, StateError> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .map_err(|source| StateError::Write { path: path.display().to_string(), source })?;
        Ok(Self { path: path.to_path_buf(), file, run: run.to_string(), seq: 0, prev: GENESIS.to_string(), sync: true })
    }

    /// Continues an existing journal after its last record.
    pub fn append_to(path: &Path, last: &Stored) -> Result<Self, StateError> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|source| StateError::Write { path: path.display().to_string(), source })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            run: last.record.run.clone(),
            seq: last.record.seq + 1,
            prev: last.hash.clone(),
            sync: true,
        })
    }

    pub fn set_sync(&mut self, sync: bool) {
        self.sync = sync;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record and, by default, fsyncs it before returning.
    pub fn append(&mut self, vt: Duration, mut body: Body) -> Result<(), StateError> {
        match &mut body {
            Body::Header(header) => redact(&mut header.params),
            Body::Intent { params, .. } => redact(params),
            _ => {}
        }
        let record = Record {
            seq: self.seq,
            ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            vt: vt.as_secs_f64(),
            run: self.run.clone(),
            body,
            prev: self.prev.clone(),
        };
        let write_err = |source| StateError::Write { path: self.path.display().to_string(), source };
        let (line, hash) = seal(&record).map_err(|e| write_err(std::io::Error::other(e)))?;
        self.file.write_all(line.as_bytes()).map_err(write_err)?;
        // Intents must be on disk before the adapter is called, and run
        // markers at once. Outcomes, reads, logs and fact snapshots ride along
        // with the next fsync (fdatasync flushes everything before it): an
        // outcome lost with the machine leaves its intent pending, and resume
        // reconciles it against the cluster.
        let durable = matches!(
            record.body,
            Body::Header(_) | Body::Intent { .. } | Body::Resumed { .. } | Body::LockBroken { .. } | Body::End { .. }
        );
        if self.sync && durable {
            self.file.sync_data().map_err(write_err)?;
        }
        self.seq += 1;
        self.prev = hash;
        Ok(())
    }
}

/// A journal as read: its complete records and a torn tail, if the writer
/// died in the middle of a line.
#[derive(Debug, Clone)]
pub struct Journal {
    pub path: PathBuf,
    pub records: Vec<Stored>,
    /// Bytes after the last newline (a record cut short by a crash).
    pub torn_tail: Option<String>,
}

impl Journal {
    pub fn header(&self) -> Option<&RunHeader> {
        match &self.records.first()?.record.body {
            Body::Header(h) => Some(h),
            _ => None,
        }
    }

    pub fn ended(&self) -> Option<(&str, u8)> {
        self.records.iter().rev().find_map(|s| match &s.record.body {
            Body::End { result, exit_code, .. } => Some((result.as_str(), *exit_code)),
            _ => None,
        })
    }
}

/// Reads a journal. Lines must parse as records; chain checks are [`verify`]'s.
pub fn read(path: &Path) -> Result<Journal, StateError> {
    let file = File::open(path).map_err(|source| StateError::Read { path: path.display().to_string(), source })?;
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let mut torn_tail = None;
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|source| StateError::Read { path: path.display().to_string(), source })?;
        if n == 0 {
            break;
        }
        number += 1;
        if !line.ends_with('\n') {
            torn_tail = Some(line.clone());
            break;
        }
        let stored = parse_line(line.trim_end_matches('\n')).map_err(|message| StateError::Corrupt {
            path: path.display().to_string(),
            line: number,
            message,
        })?;
        records.push(stored);
    }
    Ok(Journal { path: path.to_path_buf(), records, torn_tail })
}

fn parse_line(line: &str) -> Result<Stored, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let hash = value.get("hash").and_then(Value::as_str).ok_or("no hash field")?.to_string();
    let mut without = value;
    if let Some(map) = without.as_object_mut() {
        map.remove("hash");
    }
    let record: Record = serde_json::from_value(without).map_err(|e| format!("not a pitcrew record: {e}"))?;
    Ok(Stored { record, hash })
}

/// The first record that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// 1-based line number in the file.
    pub line: usize,
    pub message: String,
}

/// Checks every line of a journal: its own hash, the link to the previous
/// record, the sequence, and that nothing follows the end record. Returns the
/// number of records when intact.
pub fn verify(path: &Path) -> Result<Result<usize, ChainBreak>, StateError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| StateError::Read { path: path.display().to_string(), source })?;
    let mut prev = GENESIS.to_string();
    let mut ended = false;
    let mut count = 0;
    let mut lines = text.split_inclusive('\n').enumerate().peekable();
    while let Some((i, raw)) = lines.next() {
        let number = i + 1;
        let bad = |message: String| Ok(Err(ChainBreak { line: number, message }));
        let Some(line) = raw.strip_suffix('\n') else {
            return bad("truncated: the line has no end (the writer died while writing it)".into());
        };
        let stored = match parse_line(line) {
            Ok(s) => s,
            Err(message) => return bad(message),
        };
        let Some(body) = line.strip_suffix(&format!(",\"hash\":\"{}\"}}", stored.hash)) else {
            return bad("the hash is not the last field of the record".into());
        };
        let body = format!("{body}}}");
        if sha256_hex(body.as_bytes()) != stored.hash {
            return bad(format!("record {} was edited: its content does not match its hash", stored.record.seq));
        }
        if stored.record.prev != prev {
            return bad(format!(
                "record {} does not follow the record before it (a record was removed, reordered or inserted)",
                stored.record.seq
            ));
        }
        if stored.record.seq != count as u64 {
            return bad(format!("record has sequence {} where {count} was expected", stored.record.seq));
        }
        if ended {
            return bad(format!("record {} comes after the run's end record (appended by hand)", stored.record.seq));
        }
        if count == 0 && !matches!(stored.record.body, Body::Header(_)) {
            return bad("the first record is not a run header".into());
        }
        ended = matches!(stored.record.body, Body::End { .. });
        prev = stored.hash;
        count += 1;
        let _ = lines.peek();
    }
    if count == 0 {
        return Ok(Err(ChainBreak { line: 1, message: "the journal is empty".into() }));
    }
    Ok(Ok(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Body {
        Body::Header(RunHeader {
            operator: "ops".into(),
            host: "h".into(),
            pid: 1,
            mode: "rehearsal".into(),
            playbook: "p.rhai".into(),
            playbook_sha256: "x".into(),
            inventory: "i.yaml".into(),
            inventory_sha256: "y".into(),
            params: Value::Null,
            faults: vec![],
            rollback_on_failure: true,
            lib: vec![],
            clusters: vec!["web".into()],
            cwd: String::new(),
            max_operations: None,
            deadline_s: None,
            modules: Default::default(),
        })
    }

    fn write_run(dir: &Path) -> PathBuf {
        let path = dir.join("r.jsonl");
        let mut w = JournalWriter::create(&path, "r").expect("create");
        w.append(Duration::ZERO, header()).expect("header");
        for i in 0..3 {
            w.append(Duration::from_secs(i), Body::Log { text: format!("line {i}") }).expect("log");
        }
        w.append(Duration::from_secs(9), Body::End { result: "succeeded".into(), exit_code: 0, outcome: Value::Null })
            .expect("end");
        path
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).expect("read").lines().map(|l| format!("{l}\n")).collect()
    }

    fn break_of(path: &Path) -> ChainBreak {
        verify(path).expect("readable").expect_err("chain should be broken")
    }

    #[test]
    fn secrets_in_parameters_are_redacted() {
        let mut value = serde_json::json!({"version": "1.2", "db_password": "hunter2", "nested": {"API_TOKEN": "x"}, "list": [{"secret": 1}]});
        redact(&mut value);
        assert_eq!(value["version"], "1.2");
        assert_eq!(value["db_password"], "[redacted]");
        assert_eq!(value["nested"]["API_TOKEN"], "[redacted]");
        assert_eq!(value["list"][0]["secret"], "[redacted]");
    }

    #[test]
    fn an_intact_chain_verifies_and_reads_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = write_run(dir.path());
        assert_eq!(verify(&path).expect("read"), Ok(5));
        let journal = read(&path).expect("read");
        assert_eq!(journal.records.len(), 5);
        assert_eq!(journal.ended(), Some(("succeeded", 0)));
        assert!(JournalWriter::create(&path, "r").is_err(), "a journal is never overwritten");
    }

    #[test]
    fn edits_removals_reorders_and_appends_are_caught() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = write_run(dir.path());
        let original = lines(&path);

        let mut edited = original.clone();
        edited[2] = edited[2].replace("line 1", "line X");
        std::fs::write(&path, edited.concat()).expect("write");
        assert_eq!(break_of(&path).line, 3);

        let mut removed = original.clone();
        removed.remove(2);
        std::fs::write(&path, removed.concat()).expect("write");
        assert!(break_of(&path).message.contains("does not follow"));

        let mut swapped = original.clone();
        swapped.swap(1, 2);
        std::fs::write(&path, swapped.concat()).expect("write");
        assert_eq!(break_of(&path).line, 2);

        let mut appended = original.clone();
        appended.push(original[1].clone());
        std::fs::write(&path, appended.concat()).expect("write");
        assert_eq!(break_of(&path).line, 6);

        let mut torn = original.concat();
        torn.truncate(torn.len() - 10);
        std::fs::write(&path, torn).expect("write");
        let b = break_of(&path);
        assert_eq!(b.line, 5);
        assert!(b.message.contains("truncated"));
        assert!(read(&path).expect("read").torn_tail.is_some());
    }
}
