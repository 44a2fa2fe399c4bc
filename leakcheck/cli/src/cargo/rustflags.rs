//! leakcheck's compiler flags added to the ones the user already has, never
//! replacing them: `--cfg tokio_unstable -C force-frame-pointers=yes` for
//! rustc, `--cfg tokio_unstable` for rustdoc (doctests).
//!
//! Cargo takes rustc flags from exactly one source, the first that is set:
//! `CARGO_ENCODED_RUSTFLAGS`, `RUSTFLAGS`, every matching
//! `target.<triple>.rustflags` / `target.<cfg>.rustflags` joined, then
//! `build.rustflags` (rustdoc: the same with `RUSTDOCFLAGS` and
//! `rustdocflags`). Setting `RUSTFLAGS` as the README's manual recipe does
//! would silently drop a user's config flags, so [`addition`] extends
//! whichever source is in effect:
//! - an environment variable is extended in place (flags appended);
//! - a config key gets a `--config <key>=[…]` argument, which cargo merges
//!   into the same key's arrays from config files, `CARGO_*` variables and
//!   the user's own `--config` arguments (arrays join, later entries last),
//!   so cargo itself keeps every flag the user had;
//! - with no source at all, `--config build.rustflags=[…]`.
//!
//! Which config key is in effect comes from cargo-config2, which
//! implements cargo's config loading (file hierarchy, `CARGO_*` variables,
//! `target.<cfg>` matching through rustc). It does not read `--config`
//! command-line arguments, so the user's are read here ([`UserConfig`]):
//! the only hand-written part, kept to the four flag keys. A
//! `target.'cfg(…)'` key given in `--config` is taken as matching (cargo
//! would evaluate it; not evaluating it here can at worst add the flags to a
//! target key when `build.rustflags` was the one in effect, which cargo then
//! applies, keeping the user's `--config` target flags).
//!
//! A flag already present (in any spelling: `--cfg=x`, `-Cforce-frame-pointers=on`)
//! is not added again.

use std::ffi::OsString;
use std::path::Path;

use crate::error::CliError;

/// What rustc needs for spawn sites (tokio's hooks) and cheap backtraces.
pub const RUSTC_FLAGS: &[[&str; 2]] = &[
    ["--cfg", "tokio_unstable"],
    ["-C", "force-frame-pointers=yes"],
];

/// What rustdoc needs for doctests that use `#[leakcheck::test]`.
pub const RUSTDOC_FLAGS: &[[&str; 2]] = &[["--cfg", "tokio_unstable"]];

/// The separator of `CARGO_ENCODED_*FLAGS`.
const UNIT_SEPARATOR: char = '\x1f';

/// rustc's flags or rustdoc's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// rustc: `RUSTFLAGS`, `rustflags`.
    Rustc,
    /// rustdoc: `RUSTDOCFLAGS`, `rustdocflags`.
    Rustdoc,
}

impl Tool {
    fn encoded_var(self) -> &'static str {
        match self {
            Tool::Rustc => "CARGO_ENCODED_RUSTFLAGS",
            Tool::Rustdoc => "CARGO_ENCODED_RUSTDOCFLAGS",
        }
    }

    fn plain_var(self) -> &'static str {
        match self {
            Tool::Rustc => "RUSTFLAGS",
            Tool::Rustdoc => "RUSTDOCFLAGS",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Tool::Rustc => "rustflags",
            Tool::Rustdoc => "rustdocflags",
        }
    }

    fn wanted(self) -> &'static [[&'static str; 2]] {
        match self {
            Tool::Rustc => RUSTC_FLAGS,
            Tool::Rustdoc => RUSTDOC_FLAGS,
        }
    }
}

/// The flags each source holds for one tool and one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// `CARGO_ENCODED_*FLAGS`, when set (even empty).
    pub encoded: Option<String>,
    /// `RUSTFLAGS` / `RUSTDOCFLAGS`, when set.
    pub plain: Option<String>,
    /// The matching `target.*` entries joined, when any is set.
    pub target: Option<Vec<String>>,
    /// `build.*flags`, when set.
    pub build: Option<Vec<String>>,
}

/// How to add the missing flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addition {
    /// Set this variable to this value (the old value plus the flags).
    Env {
        /// The variable.
        var: &'static str,
        /// Its new value.
        value: String,
    },
    /// Pass `--config <this>` to cargo.
    Config(String),
}

/// What to add for `tool` and `triple` given `sources`; `None` when every
/// flag is already in effect.
pub fn addition(tool: Tool, triple: &str, sources: &Sources) -> Option<Addition> {
    let present: Vec<String> = match (
        &sources.encoded,
        &sources.plain,
        &sources.target,
        &sources.build,
    ) {
        (Some(encoded), ..) => split_encoded(encoded),
        (None, Some(plain), ..) => plain.split_whitespace().map(str::to_owned).collect(),
        (None, None, Some(flags), _) | (None, None, None, Some(flags)) => flags.clone(),
        (None, None, None, None) => Vec::new(),
    };
    let missing = missing(tool, &present);
    if missing.is_empty() {
        return None;
    }
    Some(if let Some(encoded) = &sources.encoded {
        let mut value = encoded.clone();
        for flag in &missing {
            if !value.is_empty() {
                value.push(UNIT_SEPARATOR);
            }
            value.push_str(flag);
        }
        Addition::Env {
            var: tool.encoded_var(),
            value,
        }
    } else if let Some(plain) = &sources.plain {
        let mut value = plain.trim_end().to_owned();
        for flag in &missing {
            if !value.is_empty() {
                value.push(' ');
            }
            value.push_str(flag);
        }
        Addition::Env {
            var: tool.plain_var(),
            value,
        }
    } else {
        let array = missing
            .iter()
            .map(|flag| format!("{flag:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let key = if sources.target.is_some() {
            format!("target.'{triple}'.{}", tool.key())
        } else {
            format!("build.{}", tool.key())
        };
        Addition::Config(format!("{key}=[{array}]"))
    })
}

fn split_encoded(encoded: &str) -> Vec<String> {
    if encoded.is_empty() {
        return Vec::new();
    }
    encoded.split(UNIT_SEPARATOR).map(str::to_owned).collect()
}

/// `tool`'s wanted flags that `present` lacks, as separate arguments.
fn missing(tool: Tool, present: &[String]) -> Vec<String> {
    let present = normalize(present);
    tool.wanted()
        .iter()
        .filter(|[option, value]| {
            !present
                .iter()
                .any(|(o, v)| o == option && same_value(value, v))
        })
        .flat_map(|[option, value]| [(*option).to_owned(), (*value).to_owned()])
        .collect()
}

/// `--cfg x`, `--cfg=x`, `-C y`, `-Cy` as (option, value) pairs.
fn normalize(flags: &[String]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut iter = flags.iter();
    while let Some(flag) = iter.next() {
        for option in ["--cfg", "-C"] {
            if flag == option {
                if let Some(value) = iter.next() {
                    pairs.push((option.to_owned(), value.clone()));
                }
            } else if let Some(value) = flag.strip_prefix(&format!("{option}=")) {
                pairs.push((option.to_owned(), value.to_owned()));
            } else if option == "-C" && flag.len() > 2 && flag.starts_with("-C") {
                pairs.push((option.to_owned(), flag[2..].to_owned()));
            }
        }
    }
    pairs
}

/// `force-frame-pointers=yes` also reads `=on`, `=y`, `=true` or no value.
fn same_value(wanted: &str, present: &str) -> bool {
    if wanted == present {
        return true;
    }
    match (wanted.split_once('='), present.split_once('=')) {
        (Some((name, "yes")), Some((other, value))) => {
            name == other && matches!(value, "y" | "on" | "true")
        }
        (Some((name, "yes")), None) => name == present,
        _ => false,
    }
}

/// The flag keys of the user's own `--config` arguments (`KEY=VALUE` in
/// TOML, or a config file path).
#[derive(Debug, Default)]
pub struct UserConfig {
    configs: Vec<cargo_config2::de::Config>,
}

impl UserConfig {
    /// Reads every `--config` value among cargo's arguments (`--config V`
    /// and `--config=V`, before a `--`).
    pub fn from_args(args: &[OsString]) -> Result<UserConfig, CliError> {
        let mut configs = Vec::new();
        for value in config_values(args) {
            let path = Path::new(&value);
            let config = if !value.contains('=') || (value.ends_with(".toml") && path.is_file()) {
                cargo_config2::de::Config::load_file(path).map_err(|err| {
                    CliError::input(
                        path,
                        format!("cannot be read as a cargo --config file: {err}"),
                    )
                })?
            } else {
                toml::from_str(&value).map_err(|err| {
                    CliError::Usage(format!(
                        "--config {value:?} is not a cargo config value leakcheck can read: {}",
                        err.message()
                    ))
                })?
            };
            configs.push(config);
        }
        Ok(UserConfig { configs })
    }

    fn build(&self, tool: Tool) -> Option<Vec<String>> {
        let mut found = None;
        for config in &self.configs {
            let flags = match tool {
                Tool::Rustc => &config.build.rustflags,
                Tool::Rustdoc => &config.build.rustdocflags,
            };
            if let Some(flags) = flags {
                found
                    .get_or_insert_with(Vec::new)
                    .extend(flags.flags.iter().map(|v| v.val.clone()));
            }
        }
        found
    }

    fn target(&self, tool: Tool, triple: &str) -> Option<Vec<String>> {
        let mut found = None;
        for config in &self.configs {
            for (key, target) in &config.target {
                if key != triple && !key.starts_with("cfg(") {
                    continue;
                }
                let flags = match tool {
                    Tool::Rustc => &target.rustflags,
                    Tool::Rustdoc => &target.rustdocflags,
                };
                if let Some(flags) = flags {
                    found
                        .get_or_insert_with(Vec::new)
                        .extend(flags.flags.iter().map(|v| v.val.clone()));
                }
            }
        }
        found
    }
}

/// The values of `--config` among `args` (cargo's own arguments, before `--`).
pub fn config_values(args: &[OsString]) -> Vec<String> {
    let mut values = Vec::new();
    let mut iter = args.iter().map(|a| a.to_string_lossy());
    while let Some(arg) = iter.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            if let Some(value) = iter.next() {
                values.push(value.into_owned());
            }
        } else if let Some(value) = arg.strip_prefix("--config=") {
            values.push(value.to_owned());
        }
    }
    values
}

/// The targets cargo will build for: every `--target` among `args`, else
/// `build.target`, else the host.
pub fn targets(args: &[OsString], config: &cargo_config2::Config) -> Result<Vec<String>, CliError> {
    let mut from_args = Vec::new();
    let mut iter = args.iter().map(|a| a.to_string_lossy());
    while let Some(arg) = iter.next() {
        if arg == "--" {
            break;
        }
        if arg == "--target" {
            if let Some(value) = iter.next() {
                from_args.push(value.into_owned());
            }
        } else if let Some(value) = arg.strip_prefix("--target=") {
            from_args.push(value.to_owned());
        }
    }
    let triples = config
        .build_target_for_cli(&from_args)
        .map_err(|err| config_error(&err))?;
    if !triples.is_empty() {
        return Ok(triples);
    }
    Ok(vec![
        config
            .host_triple()
            .map_err(|err| config_error(&err))?
            .to_owned(),
    ])
}

/// Loads the cargo configuration seen from `cwd` as cargo would, except
/// for the `RUSTFLAGS`-style variables, which [`sources`] reads itself.
pub fn load_config(cwd: &Path) -> Result<cargo_config2::Config, CliError> {
    let env = std::env::vars_os().filter(|(name, _)| {
        ![
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTDOCFLAGS",
            "CARGO_ENCODED_RUSTDOCFLAGS",
        ]
        .iter()
        .any(|skipped| name == skipped)
    });
    let options = cargo_config2::ResolveOptions::default().env(env);
    cargo_config2::Config::load_with_options(cwd, options).map_err(|err| config_error(&err))
}

fn config_error(err: &cargo_config2::Error) -> CliError {
    CliError::Usage(format!("cannot read the cargo configuration: {err:#}"))
}

/// What each source holds for `tool` and `triple`: `var` reads the
/// environment, `config` the loaded configuration, `user` the `--config`
/// arguments.
pub fn sources(
    tool: Tool,
    triple: &str,
    var: impl Fn(&str) -> Option<String>,
    config: &cargo_config2::Config,
    user: &UserConfig,
) -> Result<Sources, CliError> {
    let flags = |flags: Option<cargo_config2::Flags>| flags.map(|f| f.flags);
    let (effective, build) = match tool {
        Tool::Rustc => (
            flags(config.rustflags(triple).map_err(|e| config_error(&e))?),
            flags(config.build.rustflags.clone()),
        ),
        Tool::Rustdoc => (
            flags(config.rustdocflags(triple).map_err(|e| config_error(&e))?),
            flags(config.build.rustdocflags.clone()),
        ),
    };
    // cargo-config2 falls back to `build.*` when no target entry matches:
    // flags that differ from `build.*` come from a target entry.
    let config_target = effective.filter(|flags| Some(flags) != build.as_ref());
    let join = |a: Option<Vec<String>>, b: Option<Vec<String>>| match (a, b) {
        (None, None) => None,
        (a, b) => Some([a.unwrap_or_default(), b.unwrap_or_default()].concat()),
    };
    Ok(Sources {
        encoded: var(tool.encoded_var()),
        plain: var(tool.plain_var()),
        target: join(config_target, user.target(tool, triple)),
        build: join(build, user.build(tool)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "x86_64-unknown-linux-gnu";

    fn strings(flags: &[&str]) -> Vec<String> {
        flags.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn encoded_rustflags_are_extended_in_place() {
        let sources = Sources {
            encoded: Some("-Dwarnings".to_owned()),
            plain: Some("--cfg ignored".to_owned()),
            ..Sources::default()
        };
        assert_eq!(
            addition(Tool::Rustc, HOST, &sources),
            Some(Addition::Env {
                var: "CARGO_ENCODED_RUSTFLAGS",
                value: "-Dwarnings\x1f--cfg\x1ftokio_unstable\x1f-C\x1fforce-frame-pointers=yes"
                    .to_owned()
            })
        );
        let empty = Sources {
            encoded: Some(String::new()),
            ..Sources::default()
        };
        assert_eq!(
            addition(Tool::Rustdoc, HOST, &empty),
            Some(Addition::Env {
                var: "CARGO_ENCODED_RUSTDOCFLAGS",
                value: "--cfg\x1ftokio_unstable".to_owned()
            })
        );
    }

    #[test]
    fn plain_rustflags_are_extended_and_config_is_ignored_as_cargo_does() {
        let sources = Sources {
            plain: Some("--cfg user_flag ".to_owned()),
            build: Some(strings(&["--cfg", "tokio_unstable"])),
            ..Sources::default()
        };
        assert_eq!(
            addition(Tool::Rustc, HOST, &sources),
            Some(Addition::Env {
                var: "RUSTFLAGS",
                value: "--cfg user_flag --cfg tokio_unstable -C force-frame-pointers=yes"
                    .to_owned()
            })
        );
    }

    #[test]
    fn target_rustflags_get_a_target_config_argument() {
        let sources = Sources {
            target: Some(strings(&["-Ctarget-cpu=native"])),
            build: Some(strings(&["--cfg", "dropped_by_cargo"])),
            ..Sources::default()
        };
        assert_eq!(
            addition(Tool::Rustc, HOST, &sources),
            Some(Addition::Config(
                "target.'x86_64-unknown-linux-gnu'.rustflags=[\"--cfg\", \"tokio_unstable\", \"-C\", \"force-frame-pointers=yes\"]".to_owned()
            ))
        );
    }

    #[test]
    fn build_rustflags_get_a_build_config_argument_with_only_what_is_missing() {
        let sources = Sources {
            build: Some(strings(&["--cfg=tokio_unstable"])),
            ..Sources::default()
        };
        assert_eq!(
            addition(Tool::Rustc, HOST, &sources),
            Some(Addition::Config(
                "build.rustflags=[\"-C\", \"force-frame-pointers=yes\"]".to_owned()
            ))
        );
        assert_eq!(
            addition(Tool::Rustc, HOST, &Sources::default()),
            Some(Addition::Config(
                "build.rustflags=[\"--cfg\", \"tokio_unstable\", \"-C\", \"force-frame-pointers=yes\"]".to_owned()
            ))
        );
    }

    #[test]
    fn flags_already_present_in_any_spelling_are_not_added() {
        for present in [
            "--cfg tokio_unstable -C force-frame-pointers=yes",
            "--cfg=tokio_unstable -Cforce-frame-pointers=on",
            "--cfg tokio_unstable -Cforce-frame-pointers",
        ] {
            let sources = Sources {
                plain: Some(present.to_owned()),
                ..Sources::default()
            };
            assert_eq!(addition(Tool::Rustc, HOST, &sources), None, "{present}");
        }
        // An explicit `=no` is overridden: spawn backtraces need frame pointers.
        let sources = Sources {
            plain: Some("--cfg tokio_unstable -C force-frame-pointers=no".to_owned()),
            ..Sources::default()
        };
        assert!(addition(Tool::Rustc, HOST, &sources).is_some());
    }

    #[test]
    fn user_config_arguments_are_read_for_their_flag_keys() {
        let args: Vec<OsString> = [
            "--config",
            "build.rustflags=[\"--cfg\", \"from_cli\"]",
            "--config=target.'cfg(unix)'.rustflags=[\"-Ctarget-cpu=native\"]",
            "--",
            "--config",
            "not-for-cargo",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let user = UserConfig::from_args(&args).unwrap();
        assert_eq!(
            user.build(Tool::Rustc),
            Some(strings(&["--cfg", "from_cli"]))
        );
        assert_eq!(
            user.target(Tool::Rustc, HOST),
            Some(strings(&["-Ctarget-cpu=native"]))
        );
        assert_eq!(user.build(Tool::Rustdoc), None);
    }

    #[test]
    fn config_files_decide_between_target_and_build() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".cargo")).unwrap();
        let config_file = dir.path().join(".cargo/config.toml");
        let none = |_: &str| None;
        let user = UserConfig::default();

        std::fs::write(
            &config_file,
            "[build]\nrustflags = [\"--cfg\", \"user_flag\"]\n",
        )
        .unwrap();
        let config = load_config(dir.path()).unwrap();
        let host = config.host_triple().unwrap().to_owned();
        let found = sources(Tool::Rustc, &host, none, &config, &user).unwrap();
        assert_eq!(found.target, None);
        assert_eq!(found.build, Some(strings(&["--cfg", "user_flag"])));

        std::fs::write(
            &config_file,
            format!("[build]\nrustflags = [\"--cfg\", \"ignored\"]\n[target.{host}]\nrustflags = [\"--cfg\", \"per_target\"]\n"),
        )
        .unwrap();
        let config = load_config(dir.path()).unwrap();
        let found = sources(Tool::Rustc, &host, none, &config, &user).unwrap();
        assert_eq!(found.target, Some(strings(&["--cfg", "per_target"])));
        assert!(matches!(
            addition(Tool::Rustc, &host, &found),
            Some(Addition::Config(arg)) if arg.starts_with(&format!("target.'{host}'.rustflags="))
        ));
    }
}
