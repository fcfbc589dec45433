//! The `oxray` command line: training, evaluation, environments, benchmarks and
//! cluster management, all in one binary.
//!
//! The same executable is also re-executed as oxray's worker processes; that
//! switch happens inside `oxray-core` before `main` runs, so nothing here has to
//! know about it.

mod cli;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(error) = cli.run() {
        if let Some(interrupted) = error.downcast_ref::<cli::Interrupted>() {
            eprintln!("{interrupted}");
            std::process::exit(interrupted.exit_status());
        }
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
