//! pitcrew-stdlib: the Rhai surface of pitcrew.
//!
//! Each group of built-ins lives in its own documented module
//! ([`api_cluster`], [`api_steps`], [`api_flow`]); every built-in's doc
//! comment carries an example. [`engine::new_engine`] registers them with
//! the limits pitcrew always runs with; [`session::run`] runs a compiled
//! [`playbook::Playbook`] against an executor.

pub mod api_cluster;
pub mod api_flow;
pub mod api_steps;
pub mod check;
pub mod engine;
pub mod handles;
pub mod host;
pub mod modules;
pub mod playbook;
pub mod reference;
pub mod session;

pub use engine::{new_engine, Limits};
pub use playbook::{compile, compile_source, Playbook, PlaybookError};
pub use rhai::Engine;
pub use session::{run, RunError, RunOutcome, RunRequest, RunResult, StopKind};
