//! End-to-end tests of the `pitcrew` binary against the sim twin: every
//! shipped playbook rehearsed with and without faults, guard refusals,
//! runtime limits and input errors.

mod support;

mod audit;
mod copy_dir;
mod diagnostics;
mod drift;
mod errors;
mod guards;
mod links;
mod markdown;
mod notify;
mod readme;
mod real;
mod real_pair;
mod real_pool;
mod rehearsals;
mod report;
mod resume;
mod watch;
