//! The attribute's arguments: tokio-macros 2.7's own (`flavor`,
//! `worker_threads`, `start_paused`, `crate`, `unhandled_panic`, `name`),
//! accepted and rejected exactly as `#[tokio::test]` does and with its
//! messages, plus leakcheck's (`grace`, `ignore`, `mode`, `leakcheck_crate`).
//! Every mistake is a compile error at its span.

use proc_macro2::Span;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, Path, Token};

/// The attribute's name in messages.
pub(crate) const MACRO_NAME: &str = "leakcheck::test";

/// Every argument the attribute accepts, for error messages.
const VALID: &str = "`flavor`, `worker_threads`, `start_paused`, `crate`, `unhandled_panic`, `name`, `grace`, `ignore`, `mode`, `leakcheck_crate`";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    CurrentThread,
    MultiThread,
    Local,
}

impl Flavor {
    fn parse(value: &str) -> Result<Flavor, String> {
        match value {
            "current_thread" => Ok(Flavor::CurrentThread),
            "multi_thread" => Ok(Flavor::MultiThread),
            "local" => Ok(Flavor::Local),
            "single_thread" => {
                Err("The single threaded runtime flavor is called `current_thread`.".to_owned())
            }
            "basic_scheduler" => Err(
                "The `basic_scheduler` runtime flavor has been renamed to `current_thread`."
                    .to_owned(),
            ),
            "threaded_scheduler" => Err(
                "The `threaded_scheduler` runtime flavor has been renamed to `multi_thread`."
                    .to_owned(),
            ),
            _ => Err(format!(
                "No such runtime flavor `{value}`. The runtime flavors are `current_thread`, `local`, and `multi_thread`."
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnhandledPanic {
    Ignore,
    ShutdownRuntime,
}

impl UnhandledPanic {
    fn parse(value: &str) -> Result<UnhandledPanic, String> {
        match value {
            "ignore" => Ok(UnhandledPanic::Ignore),
            "shutdown_runtime" => Ok(UnhandledPanic::ShutdownRuntime),
            _ => Err(format!(
                "No such unhandled panic behavior `{value}`. The unhandled panic behaviors are `ignore` and `shutdown_runtime`."
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Fail,
    Warn,
}

impl Mode {
    fn parse(value: &str) -> Result<Mode, String> {
        match value {
            "fail" => Ok(Mode::Fail),
            "warn" => Ok(Mode::Warn),
            _ => Err(format!(
                "No such mode `{value}`. The modes are `fail` and `warn`."
            )),
        }
    }
}

/// A validated attribute. Spans point at each argument's value, where the
/// generated code that uses it is reported (for example a missing tokio
/// `test-util` feature for `start_paused`).
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) flavor: Option<Flavor>,
    pub(crate) worker_threads: Option<(usize, Span)>,
    pub(crate) start_paused: Option<(bool, Span)>,
    /// `crate = "…"`: the path to tokio, as in `#[tokio::test]`.
    pub(crate) tokio_crate: Option<Path>,
    pub(crate) unhandled_panic: Option<(UnhandledPanic, Span)>,
    pub(crate) name: Option<(String, Span)>,
    /// Checked at compile time by the core's duration parser in the
    /// generated code, so the macro crate keeps no copy of it.
    pub(crate) grace: Option<LitStr>,
    pub(crate) ignore: Vec<String>,
    pub(crate) mode: Option<Mode>,
    pub(crate) leakcheck_crate: Option<Path>,
}

impl Args {
    pub(crate) fn flavor(&self) -> Flavor {
        self.flavor.unwrap_or(Flavor::CurrentThread)
    }

    pub(crate) fn leakcheck_crate(&self) -> Path {
        self.leakcheck_crate
            .clone()
            .unwrap_or_else(|| syn::parse_quote!(::leakcheck))
    }
}

pub(crate) fn parse(tokens: proc_macro2::TokenStream) -> syn::Result<Args> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens)?;
    let mut args = Args::default();
    for meta in metas {
        match meta {
            Meta::NameValue(pair) => {
                let name = pair
                    .path
                    .get_ident()
                    .ok_or_else(|| syn::Error::new_spanned(&pair, "Must have specified ident"))?
                    .to_string()
                    .to_lowercase();
                let lit = match &pair.value {
                    Expr::Lit(ExprLit { lit, .. }) => lit.clone(),
                    expr => return Err(syn::Error::new_spanned(expr, "Must be a literal")),
                };
                args.set(&name, lit, &pair)?;
            }
            Meta::Path(path) => {
                let name = path
                    .get_ident()
                    .ok_or_else(|| syn::Error::new_spanned(&path, "Must have specified ident"))?
                    .to_string()
                    .to_lowercase();
                let message = match name.as_str() {
                    "threaded_scheduler" | "multi_thread" => format!(
                        "Set the runtime flavor with #[{MACRO_NAME}(flavor = \"multi_thread\")]."
                    ),
                    "basic_scheduler" | "current_thread" | "single_threaded" => format!(
                        "Set the runtime flavor with #[{MACRO_NAME}(flavor = \"current_thread\")]."
                    ),
                    "flavor" | "worker_threads" | "start_paused" | "crate" | "unhandled_panic"
                    | "name" | "grace" | "ignore" | "mode" | "leakcheck_crate" => {
                        format!("The `{name}` attribute requires an argument.")
                    }
                    _ => unknown(&name),
                };
                return Err(syn::Error::new_spanned(path, message));
            }
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "Unknown attribute inside the macro",
                ));
            }
        }
    }
    args.check_flavor()?;
    Ok(args)
}

fn unknown(name: &str) -> String {
    format!("Unknown attribute {name} is specified; expected one of: {VALID}.")
}

impl Args {
    fn set(&mut self, name: &str, lit: Lit, pair: &syn::MetaNameValue) -> syn::Result<()> {
        let span = lit.span();
        let twice = || syn::Error::new(span, format!("`{name}` set multiple times."));
        match name {
            "flavor" => {
                let flavor = Flavor::parse(&string(lit, name)?)
                    .map_err(|message| syn::Error::new(span, message))?;
                if self.flavor.replace(flavor).is_some() {
                    return Err(twice());
                }
            }
            "worker_threads" => {
                let workers = int(lit, name)?;
                if workers == 0 {
                    return Err(syn::Error::new(span, "`worker_threads` may not be 0."));
                }
                if self.worker_threads.replace((workers, span)).is_some() {
                    return Err(twice());
                }
            }
            "start_paused" => {
                let paused = boolean(lit, name)?;
                if self.start_paused.replace((paused, span)).is_some() {
                    return Err(twice());
                }
            }
            "crate" => {
                if self.tokio_crate.replace(path(lit, name)?).is_some() {
                    return Err(twice());
                }
            }
            "unhandled_panic" => {
                let behavior = UnhandledPanic::parse(&string(lit, name)?)
                    .map_err(|message| syn::Error::new(span, message))?;
                if self.unhandled_panic.replace((behavior, span)).is_some() {
                    return Err(twice());
                }
            }
            "name" => {
                let runtime_name = string(lit, name)?;
                // tokio's `Builder::name` panics on an empty name at run
                // time; say so where it is written instead.
                if runtime_name.trim().is_empty() {
                    return Err(syn::Error::new(span, "`name` may not be empty."));
                }
                if self.name.replace((runtime_name, span)).is_some() {
                    return Err(twice());
                }
            }
            "grace" => {
                let Lit::Str(grace) = lit else {
                    return Err(not_a(span, name, "string"));
                };
                if self.grace.replace(grace).is_some() {
                    return Err(twice());
                }
            }
            "ignore" => {
                let pattern = string(lit, name)?;
                if pattern.is_empty() {
                    return Err(syn::Error::new(
                        span,
                        "`ignore` may not be empty: give a spawn-site path (`\"src/conn.rs:88\"`) or a function path prefix (`\"hyper_util::client\"`).",
                    ));
                }
                self.ignore.push(pattern);
            }
            "mode" => {
                let mode = Mode::parse(&string(lit, name)?)
                    .map_err(|message| syn::Error::new(span, message))?;
                if self.mode.replace(mode).is_some() {
                    return Err(twice());
                }
            }
            "leakcheck_crate" => {
                if self.leakcheck_crate.replace(path(lit, name)?).is_some() {
                    return Err(twice());
                }
            }
            "core_threads" => {
                return Err(syn::Error::new_spanned(
                    pair,
                    "Attribute `core_threads` is renamed to `worker_threads`",
                ));
            }
            _ => return Err(syn::Error::new_spanned(pair, unknown(name))),
        }
        Ok(())
    }

    /// tokio's rules for which options a flavor takes.
    fn check_flavor(&self) -> syn::Result<()> {
        let flavor = self.flavor();
        if let (Flavor::CurrentThread | Flavor::Local, Some((_, span))) =
            (flavor, self.worker_threads)
        {
            return Err(syn::Error::new(
                span,
                format!(
                    "The `worker_threads` option requires the `multi_thread` runtime flavor. Use `#[{MACRO_NAME}(flavor = \"multi_thread\")]`"
                ),
            ));
        }
        if flavor == Flavor::MultiThread {
            for (option, span) in [
                ("start_paused", self.start_paused.map(|(_, span)| span)),
                (
                    "unhandled_panic",
                    self.unhandled_panic.map(|(_, span)| span),
                ),
            ] {
                if let Some(span) = span {
                    return Err(syn::Error::new(
                        span,
                        format!(
                            "The `{option}` option requires the `current_thread` runtime flavor. Use `#[{MACRO_NAME}(flavor = \"current_thread\")]`"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn not_a(span: Span, field: &str, kind: &str) -> syn::Error {
    syn::Error::new(
        span,
        format!("Failed to parse value of `{field}` as {kind}."),
    )
}

fn string(lit: Lit, field: &str) -> syn::Result<String> {
    match lit {
        Lit::Str(s) => Ok(s.value()),
        Lit::Verbatim(s) => Ok(s.to_string()),
        other => Err(not_a(other.span(), field, "string")),
    }
}

fn int(lit: Lit, field: &str) -> syn::Result<usize> {
    match lit {
        Lit::Int(int) => int.base10_parse::<usize>().map_err(|err| {
            syn::Error::new(
                int.span(),
                format!("Failed to parse value of `{field}` as integer: {err}"),
            )
        }),
        other => Err(not_a(other.span(), field, "integer")),
    }
}

fn boolean(lit: Lit, field: &str) -> syn::Result<bool> {
    match lit {
        Lit::Bool(b) => Ok(b.value),
        other => Err(not_a(other.span(), field, "bool")),
    }
}

fn path(lit: Lit, field: &str) -> syn::Result<Path> {
    match lit {
        Lit::Str(s) => s.parse::<Path>().map_err(|_| {
            syn::Error::new(
                s.span(),
                format!(
                    "Failed to parse value of `{field}` as path: \"{}\"",
                    s.value()
                ),
            )
        }),
        other => Err(not_a(other.span(), field, "path")),
    }
}
