//! The command line, shaped like ripgrep's core: raw flags are parsed by clap, turned into
//! validated [`Options`], and [`run`] returns the exit code.
//!
//! Exit codes: `0` no violation, `1` violations (new ones, with `--baseline`; with
//! `--strict`, also unresolved calls in hot code), `2` usage,
//! configuration, parse or I/O error.

use crate::analysis;
use crate::baseline;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::report::{self, Format};
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// No violation.
pub const EXIT_CLEAN: u8 = 0;
/// At least one (new) violation.
pub const EXIT_VIOLATIONS: u8 = 1;
/// Usage, configuration, parse or I/O error: no verdict.
pub const EXIT_ERROR: u8 = 2;

/// Rejects any LLM call reachable from hot-path code.
#[derive(Debug, Parser)]
#[command(name = "hotpath-lint", version, about, long_about = None)]
struct RawArgs {
    /// The configuration file [default: PATH/hotpath.toml]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Also write a Markdown audit of every LLM call site to FILE
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
    /// Record violations into FILE if it does not exist; otherwise fail only on new ones
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Also fail on every call in hot code the lint cannot resolve (listed with its location)
    #[arg(long)]
    strict: bool,
    /// The workspace (or package) root
    #[arg(value_name = "PATH", default_value = ".")]
    path: PathBuf,
}

/// Validated options.
#[derive(Debug, Clone)]
pub struct Options {
    pub root: PathBuf,
    pub config: Config,
    pub format: Format,
    pub audit: Option<PathBuf>,
    pub baseline: Option<PathBuf>,
}

impl Options {
    fn from_raw(raw: RawArgs) -> Result<Options> {
        if !raw.path.join("Cargo.toml").is_file() {
            return Err(Error::Usage(format!(
                "{} has no Cargo.toml",
                raw.path.display()
            )));
        }
        let config_path = raw.config.unwrap_or_else(|| raw.path.join("hotpath.toml"));
        let mut config = Config::load(&config_path)?;
        config.strict = raw.strict;
        Ok(Options {
            root: raw.path,
            config,
            format: raw.format,
            audit: raw.audit,
            baseline: raw.baseline,
        })
    }
}

/// Parses arguments, runs, prints, and maps every outcome to an exit code.
pub fn main_with<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let raw = match RawArgs::try_parse_from(args) {
        Ok(raw) => raw,
        Err(e) => {
            if e.use_stderr() {
                let _ = write!(err, "{e}");
            } else {
                let _ = write!(out, "{e}");
            }
            return ExitCode::from(if e.use_stderr() {
                EXIT_ERROR
            } else {
                EXIT_CLEAN
            });
        }
    };
    match Options::from_raw(raw).and_then(|o| run(&o, out, err)) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "hotpath-lint: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Runs the lint with validated options; the report goes to `out`, notes to `err`.
pub fn run(opts: &Options, out: &mut dyn Write, err: &mut dyn Write) -> Result<ExitCode> {
    let analysis = analysis::check(&opts.root, &opts.config)?;
    let mut ctx = report::Context::default();
    let mut violations = analysis.violations.clone();
    if let Some(path) = &opts.baseline {
        ctx.baseline = true;
        match baseline::read(path)? {
            None => {
                baseline::write(path, &violations)?;
                let _ = writeln!(
                    err,
                    "hotpath-lint: recorded {} violation(s) in baseline {}",
                    violations.len(),
                    path.display()
                );
                ctx.baselined = violations.len();
                violations.clear();
            }
            Some(keys) => {
                let (fresh, known, fixed) = baseline::filter(&keys, &violations);
                ctx.baselined = known;
                ctx.baseline_fixed = fixed;
                violations = fresh;
            }
        }
    }
    if let Some(path) = &opts.audit {
        std::fs::write(path, report::audit(&analysis)).map_err(|e| Error::Io {
            path: path.clone(),
            message: e.to_string(),
        })?;
    }
    ctx.strict = opts.config.strict;
    let rendered = report::render(opts.format, &analysis, &violations, &ctx);
    out.write_all(rendered.as_bytes()).map_err(|e| Error::Io {
        path: "<stdout>".into(),
        message: e.to_string(),
    })?;
    let unresolved = opts.config.strict && !analysis.unresolved.is_empty();
    Ok(ExitCode::from(if violations.is_empty() && !unresolved {
        EXIT_CLEAN
    } else {
        EXIT_VIOLATIONS
    }))
}
