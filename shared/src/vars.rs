//! The parsing toolkit for configuration from environment variables (the assembled settings
//! are in [`crate::config`]).
//!
//! Settings are read through [`Source`], a tiny trait over "a source of strings": the process
//! environment in production ([`Env`]), a `HashMap` in tests, so every parse rule is unit-tested
//! without touching the real environment. Every problem is a [`ConfigError`] naming the variable;
//! the binaries print it as one line and exit with [`crate::EXIT_USAGE`] (64).
//!
//! An empty value counts as unset (compose files often pass `VAR=` through), and surrounding
//! white space is ignored.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// A source of configuration strings.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct Env;

impl Source for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Source for HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).map(|v| v.to_string())
    }
}

/// A bad setting: which variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub fn new(var: &'static str, problem: impl Into<String>) -> Self {
        Self { var, problem: problem.into() }
    }
}

/// One documented variable, for `--help` and for tests that check the list is complete.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// The variables as a `--help` table.
pub fn help_table(vars: &[Var]) -> String {
    let width = vars.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut out = String::from("Configuration (environment variables):\n");
    for var in vars {
        out.push_str(&format!("  {:width$}  {} [default: {}]\n", var.name, var.help, var.default));
    }
    out
}

/// Typed reads from a [`Source`].
pub struct Reader<'a> {
    source: &'a dyn Source,
}

impl<'a> Reader<'a> {
    pub fn new(source: &'a dyn Source) -> Self {
        Self { source }
    }

    /// The trimmed value, `None` when unset or empty.
    pub fn raw(&self, name: &str) -> Option<String> {
        self.source.get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or_else(|| default.to_string())
    }

    /// A value parsed with `FromStr`.
    pub fn parse<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.raw(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| ConfigError::new(name, format!("{v:?} is not valid: {e}"))),
        }
    }

    /// A whole number in `min..=max`.
    pub fn number(&self, name: &'static str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let value = match self.raw(name) {
            None => return Ok(default),
            Some(v) => v.parse::<u64>().map_err(|_| ConfigError::new(name, format!("{v:?} is not a whole number")))?,
        };
        if value < min || value > max {
            return Err(ConfigError::new(name, format!("{value} is out of range ({min} to {max})")));
        }
        Ok(value)
    }

    /// Milliseconds, as a duration (at least 1 ms).
    pub fn millis(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.number(name, default, 1, u64::from(u32::MAX)).map(Duration::from_millis)
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case).
    pub fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::new(name, format!("{v:?} is not true or false"))),
            },
        }
    }

    pub fn socket_addr(&self, name: &'static str, default: &str) -> Result<SocketAddr, ConfigError> {
        let v = self.string(name, default);
        v.parse().map_err(|_| ConfigError::new(name, format!("{v:?} is not an address like 0.0.0.0:8080")))
    }
}
