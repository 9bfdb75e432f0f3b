//! The `hotpath-lint` binary: see the library for the analysis and [`hotpath_lint::cli`] for
//! flags and exit codes (0 clean, 1 violations, 2 usage/config/parse error).

use std::process::ExitCode;

fn main() -> ExitCode {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    hotpath_lint::cli::main_with(std::env::args_os(), &mut stdout.lock(), &mut stderr.lock())
}
