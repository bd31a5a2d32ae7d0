//! The `pitcrew` binary: parses arguments, runs the command, exits with its code.

mod app;
mod audit;
mod cli;
mod drift;
mod live;
mod notify;
mod render;
mod report;
mod watch;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(app::run())
}
