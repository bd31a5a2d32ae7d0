//! Command-line arguments, turned once into the resolved options the rest
//! of the binary sees.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pitcrew_plugins::sim::Fault;

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the playbook failed and was rolled back (or left as is with --no-rollback)
  2  invalid input: arguments, inventory, playbook syntax, a playbook that fails on a clean twin
  3  refused by a guard before anything was touched, or a cluster is locked by another run
  4  rollback failed: the cluster needs a human
  5  drift found (pitcrew drift)
  6  the audit trail of a run is broken (pitcrew audit verify)";

#[derive(Debug, Parser)]
#[command(name = "pitcrew", version, about = "Near-zero-downtime patching of high-availability clusters", after_help = EXIT_CODES)]
pub struct Cli {
    /// Where journals, locks, fact baselines and sim state live
    /// [default: .pitcrew in the working directory].
    #[arg(long, global = true, env = "PITCREW_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rehearse a playbook on a simulated twin of the inventory (virtual time, injected faults).
    #[command(after_help = EXIT_CODES)]
    Rehearse {
        #[command(flatten)]
        run: RunArgs,
        /// Inject a fault: patch:NODE:fail, reboot:NODE:hang, sync:NODE:lag=30s,
        /// probe:NODE:errors=20%, drain:NODE:stuck (repeatable).
        #[arg(long = "fault", value_name = "SPEC")]
        faults: Vec<Fault>,
        /// Rehearse again on every save of the playbook, a module it imports or
        /// the inventory; a save that does not compile keeps the last good version.
        #[arg(long)]
        watch: bool,
        /// Play simulated time FACTOR times faster than real time (60: a simulated
        /// minute per second) instead of as fast as possible.
        #[arg(long, value_name = "FACTOR", value_parser = parse_pace)]
        pace: Option<f64>,
    },
    /// Run a playbook on the adapters the inventory names (after a preflight rehearsal).
    #[command(after_help = EXIT_CODES)]
    Run {
        #[command(flatten)]
        run: RunArgs,
        /// Skip the preflight rehearsal on a fault-free twin.
        #[arg(long)]
        no_preflight: bool,
    },
    /// Continue a run whose runner died (SIGKILL, power loss) from its journal.
    #[command(after_help = EXIT_CODES)]
    Resume {
        /// The run id (or a unique prefix), as `pitcrew runs` lists it.
        run: String,
        #[command(flatten)]
        output: OutputArgs,
        /// Take over cluster locks whose holder process is gone.
        #[arg(long)]
        break_lock: bool,
        /// A parameter to give again, e.g. a secret the journal recorded as [redacted] (repeatable).
        #[arg(long = "param", value_name = "K=V", value_parser = parse_param)]
        params: Vec<(String, serde_json::Value)>,
    },
    /// Verify or show a run's audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// List the runs of the state directory.
    Runs,
    /// Render a run from its audit trail: Markdown, a self-contained HTML page, or JSON.
    Report {
        /// The run id (or a unique prefix), as `pitcrew runs` lists it.
        run: String,
        /// md, html or json.
        #[arg(long, default_value = "md")]
        format: String,
        /// Write to this file instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// A handlebars template to use instead of the built-in one (md, html);
        /// `--format json` shows every field it can use.
        #[arg(long, value_name = "FILE")]
        template: Option<PathBuf>,
    },
    /// Gather facts now and report nodes that differ from their peers or from the last run.
    #[command(after_help = EXIT_CODES)]
    Drift {
        /// The inventory (YAML).
        #[arg(short, long)]
        inventory: PathBuf,
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Change a fact of the sim world first, outside any step: drift:NODE:PACKAGE=VERSION (repeatable).
        #[arg(long = "fault", value_name = "SPEC")]
        faults: Vec<Fault>,
    },
    /// Print the reference of every built-in (signature, doc, example).
    Docs {
        /// `text` or `markdown`.
        #[arg(long, default_value = "text")]
        format: String,
        /// Write `.d.rhai` definition files for editors into DIR instead.
        #[arg(long, value_name = "DIR")]
        definitions: Option<PathBuf>,
    },
    /// Compile a playbook (and load an inventory) and report errors without running anything.
    Check {
        /// The playbook (.rhai).
        playbook: PathBuf,
        /// Inventory to validate alongside.
        #[arg(short, long)]
        inventory: Option<PathBuf>,
        /// A library root for imports, searched after the playbook's directory
        /// (repeatable; PITCREW_LIB takes a colon-separated list).
        #[arg(long = "lib", value_name = "DIR", env = "PITCREW_LIB", value_delimiter = ':')]
        lib: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain: exit 0 when intact, 6 naming the first bad record.
    #[command(after_help = EXIT_CODES)]
    Verify { run: String },
    /// Print a readable timeline of the run.
    Show { run: String },
}

#[derive(Debug, Args, Clone)]
pub struct OutputArgs {
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines, only the summary.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More progress: step starts and batch ends.
    #[arg(short, long)]
    pub verbose: bool,
    /// Progress as a live view on a terminal and lines otherwise (auto),
    /// always plain lines (plain), or one JSON object per event (json).
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Plain,
    Json,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The playbook (.rhai).
    pub playbook: PathBuf,
    /// The inventory (YAML).
    #[arg(short, long)]
    pub inventory: PathBuf,
    /// A playbook parameter, read with param("name") (repeatable).
    #[arg(long = "param", value_name = "K=V", value_parser = parse_param)]
    pub params: Vec<(String, serde_json::Value)>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Take over cluster locks whose holder process is gone (recorded in the audit trail).
    #[arg(long)]
    pub break_lock: bool,
    /// Leave a failed run as it is for inspection instead of rolling back.
    #[arg(long)]
    pub no_rollback: bool,
    /// Library root for imports (repeatable).
    #[arg(long = "lib", value_name = "DIR", env = "PITCREW_LIB", value_delimiter = ':')]
    pub lib: Vec<PathBuf>,
    /// Stop the playbook after this many script operations.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_operations: u64,
    /// Stop the playbook after this much wall-clock time (e.g. 90s, 4h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
}

/// `K=V`, with V read as a boolean, integer or number when it looks like one.
pub fn parse_param(raw: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = raw.split_once('=').ok_or_else(|| format!("`{raw}` is not K=V"))?;
    if key.is_empty() {
        return Err(format!("`{raw}` has an empty name"));
    }
    let value = match value {
        "true" => serde_json::Value::Bool(true),
        "false" => serde_json::Value::Bool(false),
        v => v
            .parse::<i64>()
            .map(Into::into)
            .or_else(|_| v.parse::<f64>().map(Into::into))
            .unwrap_or_else(|_| serde_json::Value::String(v.to_string())),
    };
    Ok((key.to_string(), value))
}

fn parse_pace(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f > 0.0 && f.is_finite() => Ok(f),
        _ => Err(format!("`{text}` is not a positive number (60 plays a simulated minute per second)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_typed() {
        assert_eq!(parse_param("switch_back=true"), Ok(("switch_back".into(), true.into())));
        assert_eq!(parse_param("batch=3"), Ok(("batch".into(), 3.into())));
        assert_eq!(parse_param("rate=0.05"), Ok(("rate".into(), 0.05.into())));
        assert_eq!(parse_param("target=db-pair"), Ok(("target".into(), "db-pair".into())));
        assert!(parse_param("nope").is_err());
    }
}
