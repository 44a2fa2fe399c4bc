//! Tracker settings, their defaults and where they come from: attribute or
//! builder arguments over the `LEAKCHECK_*` environment variables over the
//! package's `[package.metadata.leakcheck]` over the workspace's
//! `[workspace.metadata.leakcheck]` (see [`crate::manifest`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::duration::parse_duration;
use crate::manifest::CrateSettings;

/// How long a scope's tasks may keep running after its body returned:
/// 250 ms, unless `LEAKCHECK_GRACE` or an explicit setting says otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_millis(250);

/// Default for [`BacktraceMode`]: [`BacktraceMode::Full`].
pub const DEFAULT_BACKTRACE: BacktraceMode = BacktraceMode::Full;

/// Default for [`Mode`]: [`Mode::Fail`].
pub const DEFAULT_MODE: Mode = Mode::Fail;

/// Separator of the patterns in `LEAKCHECK_IGNORE`
/// (`LEAKCHECK_IGNORE=src/metrics.rs,hyper_util::client`): a comma, because
/// patterns themselves contain `:` (`src/conn.rs:88`, `tokio::time`).
pub const IGNORE_SEPARATOR: char = ',';

/// Directory (under the workspace's `target/`) where reports go when `CI` is
/// set and `LEAKCHECK_REPORT_DIR` is not.
pub const DEFAULT_CI_REPORT_DIR: &str = "target/leakcheck-reports";

/// What the spawn hook captures besides the spawn site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BacktraceMode {
    /// Spawn site only (`path:line:col`).
    Off,
    /// Spawn site plus a raw spawn backtrace, symbolized only for leaked tasks.
    Full,
}

/// What a leak does to the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mode {
    /// Fail the test (panic with the report).
    #[default]
    Fail,
    /// Print the report to stderr and let the test pass.
    Warn,
}

/// A `LEAKCHECK_*` variable held a value leakcheck cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SettingError {
    /// The variable (or attribute argument) at fault.
    pub name: String,
    /// The value it held.
    pub value: String,
    /// What would have been accepted.
    pub expected: &'static str,
}

impl std::fmt::Display for SettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={:?} is not valid: expected {}",
            self.name, self.value, self.expected
        )
    }
}

impl std::error::Error for SettingError {}

/// Resolved settings of a tracker.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) backtrace: BacktraceMode,
    pub(crate) grace: Duration,
    pub(crate) mode: Mode,
    pub(crate) report_dir: Option<PathBuf>,
    /// Crate-wide ignore patterns: the workspace's, the package's, then
    /// `LEAKCHECK_IGNORE`'s (patterns add up; none overrides another).
    pub(crate) ignore: Vec<String>,
    /// `LEAKCHECK_BASELINE`: leaks recorded there do not fail a test.
    pub(crate) baseline: Option<PathBuf>,
}

impl Settings {
    /// Defaults overridden by the crate's manifests, then by the environment.
    /// A malformed variable or manifest table is a configuration error the
    /// user must see, so it panics naming the variable or the file and what
    /// would be accepted.
    pub(crate) fn from_env() -> Settings {
        let manifest = match crate::manifest::crate_settings() {
            Ok(manifest) => manifest,
            Err(err) => panic!("leakcheck: {err}"),
        };
        match Self::try_from_sources(|name| std::env::var(name).ok(), manifest) {
            Ok(settings) => settings,
            Err(err) => panic!("leakcheck: {err}"),
        }
    }

    #[cfg(test)]
    pub(crate) fn try_from_env(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingError> {
        Self::try_from_sources(var, &CrateSettings::default())
    }

    /// `var` (the environment) over `manifest` (the crate's tables) over the
    /// defaults.
    pub(crate) fn try_from_sources(
        var: impl Fn(&str) -> Option<String>,
        manifest: &CrateSettings,
    ) -> Result<Settings, SettingError> {
        let backtrace = match var("LEAKCHECK_BACKTRACE") {
            None => DEFAULT_BACKTRACE,
            Some(v) => parse_backtrace(&v)
                .ok_or_else(|| err("LEAKCHECK_BACKTRACE", &v, "`off` or `full`"))?,
        };
        let grace = match var("LEAKCHECK_GRACE") {
            None => manifest.grace.unwrap_or(DEFAULT_GRACE),
            Some(v) => parse_duration(&v).ok_or_else(|| {
                err(
                    "LEAKCHECK_GRACE",
                    &v,
                    "a duration such as `250ms`, `2s` or `0`",
                )
            })?,
        };
        let mode = match var("LEAKCHECK_MODE") {
            None => DEFAULT_MODE,
            Some(v) => {
                parse_mode(&v).ok_or_else(|| err("LEAKCHECK_MODE", &v, "`fail` or `warn`"))?
            }
        };
        let report_dir = match var("LEAKCHECK_REPORT_DIR") {
            Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
            _ if var("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0") => {
                Some(crate::paths::workspace_root().join(DEFAULT_CI_REPORT_DIR))
            }
            _ => None,
        };
        let mut ignore = manifest.ignore.clone();
        if let Some(patterns) = var("LEAKCHECK_IGNORE") {
            ignore.extend(parse_ignore(&patterns).ok_or_else(|| {
                err(
                    "LEAKCHECK_IGNORE",
                    &patterns,
                    "comma-separated patterns such as `src/metrics.rs,hyper_util::client`, none empty",
                )
            })?);
        }
        let baseline = var("LEAKCHECK_BASELINE")
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);
        Ok(Settings {
            backtrace,
            grace,
            mode,
            report_dir,
            ignore,
            baseline,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            backtrace: DEFAULT_BACKTRACE,
            grace: DEFAULT_GRACE,
            mode: DEFAULT_MODE,
            report_dir: None,
            ignore: Vec::new(),
            baseline: None,
        }
    }
}

fn err(name: &str, value: &str, expected: &'static str) -> SettingError {
    SettingError {
        name: name.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

pub(crate) fn parse_backtrace(value: &str) -> Option<BacktraceMode> {
    match value.trim().to_ascii_lowercase().as_str() {
        "off" | "0" | "false" | "none" => Some(BacktraceMode::Off),
        "full" | "1" | "true" | "on" => Some(BacktraceMode::Full),
        _ => None,
    }
}

/// Splits `LEAKCHECK_IGNORE` at [`IGNORE_SEPARATOR`]; `None` when a pattern
/// is blank (it would match every task). An empty variable means no patterns.
pub(crate) fn parse_ignore(value: &str) -> Option<Vec<String>> {
    if value.trim().is_empty() {
        return Some(Vec::new());
    }
    value
        .split(IGNORE_SEPARATOR)
        .map(|pattern| {
            let pattern = pattern.trim();
            (!pattern.is_empty()).then(|| pattern.to_owned())
        })
        .collect()
}

pub(crate) fn parse_mode(value: &str) -> Option<Mode> {
    match value.trim().to_ascii_lowercase().as_str() {
        "fail" => Some(Mode::Fail),
        "warn" => Some(Mode::Warn),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_errors_name_the_variable() {
        let env = |name: &str| (name == "LEAKCHECK_GRACE").then(|| "soon".to_owned());
        let err = Settings::try_from_env(env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "LEAKCHECK_GRACE=\"soon\" is not valid: expected a duration such as `250ms`, `2s` or `0`"
        );
    }

    #[test]
    fn env_overrides_defaults() {
        let env = |name: &str| match name {
            "LEAKCHECK_BACKTRACE" => Some("off".to_owned()),
            "LEAKCHECK_MODE" => Some("warn".to_owned()),
            "LEAKCHECK_REPORT_DIR" => Some("/tmp/reports".to_owned()),
            _ => None,
        };
        let settings = Settings::try_from_env(env).unwrap();
        assert_eq!(settings.backtrace, BacktraceMode::Off);
        assert_eq!(settings.mode, Mode::Warn);
        assert_eq!(settings.grace, DEFAULT_GRACE);
        assert_eq!(settings.report_dir, Some(PathBuf::from("/tmp/reports")));
    }

    #[test]
    fn env_over_manifest_over_defaults() {
        let manifest = CrateSettings {
            grace: Some(Duration::from_secs(1)),
            ignore: vec!["src/metrics.rs".to_owned()],
        };
        let none = |_: &str| None;
        let settings = Settings::try_from_sources(none, &manifest).unwrap();
        assert_eq!(settings.grace, Duration::from_secs(1));
        assert_eq!(settings.ignore, ["src/metrics.rs"]);

        let env = |name: &str| match name {
            "LEAKCHECK_GRACE" => Some("20ms".to_owned()),
            "LEAKCHECK_IGNORE" => Some(" tokio::time , src/conn.rs:88".to_owned()),
            _ => None,
        };
        let settings = Settings::try_from_sources(env, &manifest).unwrap();
        assert_eq!(settings.grace, Duration::from_millis(20));
        assert_eq!(
            settings.ignore,
            ["src/metrics.rs", "tokio::time", "src/conn.rs:88"]
        );
    }

    #[test]
    fn blank_ignore_patterns_are_rejected() {
        let env = |name: &str| (name == "LEAKCHECK_IGNORE").then(|| "a,,b".to_owned());
        let err = Settings::try_from_env(env).unwrap_err();
        assert_eq!(err.name, "LEAKCHECK_IGNORE");
        assert_eq!(parse_ignore(""), Some(Vec::new()));
    }
}
