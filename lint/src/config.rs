//! `hotpath.toml`: which code is hot, which calls are LLM calls, which fns are vetted.
//!
//! The file is parsed strictly (unknown keys are errors) because a misspelt table would
//! otherwise silently turn the gate off.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// The validated configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Module prefixes or fn/method paths whose fns are hot-path entries.
    pub roots: Vec<String>,
    /// Fn, method, trait, type, module or crate paths that count as LLM calls.
    pub sinks: Vec<String>,
    /// Vetted fns: every chain through one of them is cut.
    pub allow: Vec<String>,
    /// `--strict`: a call in hot code the lint cannot resolve is a finding (exit 1).
    pub strict: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hot_path: RawHotPath,
    llm: RawLlm,
    #[serde(default)]
    allow: RawAllow,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHotPath {
    roots: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLlm {
    sinks: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    #[serde(default)]
    paths: Vec<String>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            message: format!("cannot read config: {e}"),
        })?;
        Config::parse(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        let cfg = Config {
            roots: raw.hot_path.roots,
            sinks: raw.llm.sinks,
            allow: raw.allow.paths,
            strict: false,
        };
        if cfg.roots.is_empty() {
            return Err(Error::Config(
                "[hot_path] roots is empty: nothing would be checked".into(),
            ));
        }
        if cfg.sinks.is_empty() {
            return Err(Error::Config(
                "[llm] sinks is empty: nothing would be found".into(),
            ));
        }
        for p in cfg.roots.iter().chain(&cfg.sinks).chain(&cfg.allow) {
            validate_path(p)?;
        }
        Ok(cfg)
    }
}

/// A pattern is a plain Rust path: `ident(::ident)*`, with `-` accepted in the crate name.
fn validate_path(p: &str) -> Result<()> {
    let ok = !p.is_empty()
        && p.split("::").enumerate().all(|(i, seg)| {
            !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || (i == 0 && c == '-'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "`{p}` is not a path like `crate::module::item`"
        )))
    }
}

/// Normalises a configured path: crate names are written with `_` in code.
pub fn normalize(p: &str) -> Vec<String> {
    p.split("::").map(|s| s.replace('-', "_")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape() {
        let c = Config::parse(
            "[hot_path]\nroots=[\"a::hot\"]\n[llm]\nsinks=[\"b::llm\"]\n[allow]\npaths=[]\n",
        )
        .unwrap();
        assert_eq!(c.roots, vec!["a::hot"]);
        assert_eq!(c.sinks, vec!["b::llm"]);
        assert!(c.allow.is_empty());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_paths() {
        assert!(Config::parse("[hot_path]\nroot=[\"a\"]\n[llm]\nsinks=[\"b\"]").is_err());
        assert!(Config::parse("[hot_path]\nroots=[\"a::\"]\n[llm]\nsinks=[\"b\"]").is_err());
        assert!(Config::parse("[hot_path]\nroots=[]\n[llm]\nsinks=[\"b\"]").is_err());
    }
}
