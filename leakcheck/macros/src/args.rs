//! The attribute's arguments: parsed, checked for unknown or duplicate names
//! and invalid values, so every mistake is a compile error at its span.

use proc_macro2::Span;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, Meta, Token};

/// Every argument the attribute accepts, for error messages.
pub(crate) const VALID: &str =
    "`flavor`, `worker_threads`, `start_paused`, `crate`, `grace`, `ignore` (repeatable), `mode`";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    CurrentThread,
    MultiThread,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Fail,
    Warn,
}

pub(crate) struct Args {
    pub(crate) flavor: Flavor,
    pub(crate) worker_threads: Option<usize>,
    pub(crate) start_paused: bool,
    pub(crate) krate: syn::Path,
    /// Grace in nanoseconds.
    pub(crate) grace: Option<u64>,
    pub(crate) ignore: Vec<String>,
    pub(crate) mode: Option<Mode>,
}

pub(crate) fn parse(tokens: proc_macro2::TokenStream) -> syn::Result<Args> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens)?;
    let mut flavor: Option<(Flavor, Span)> = None;
    let mut worker_threads: Option<(usize, Span)> = None;
    let mut start_paused: Option<(bool, Span)> = None;
    let mut krate = None;
    let mut grace = None;
    let mut mode = None;
    let mut ignore = Vec::new();
    for meta in metas {
        let Meta::NameValue(pair) = &meta else {
            return Err(syn::Error::new_spanned(
                &meta,
                format!("expected `name = value`; valid arguments: {VALID}"),
            ));
        };
        let name = pair
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        let span = syn::spanned::Spanned::span(&pair.value);
        let duplicate = || syn::Error::new_spanned(&pair.path, format!("`{name}` is given twice"));
        match name.as_str() {
            "flavor" => {
                let value = string(&pair.value, "flavor")?;
                let parsed = match value.as_str() {
                    "current_thread" => Flavor::CurrentThread,
                    "multi_thread" => Flavor::MultiThread,
                    "local" => Flavor::Local,
                    _ => {
                        return Err(syn::Error::new(
                            span,
                            format!(
                                "unknown flavor `{value}`: expected \"current_thread\", \"multi_thread\" or \"local\""
                            ),
                        ));
                    }
                };
                if flavor.replace((parsed, span)).is_some() {
                    return Err(duplicate());
                }
            }
            "worker_threads" => {
                let value = match &pair.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(int), ..
                    }) => int.base10_parse::<usize>()?,
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "`worker_threads` takes an integer, e.g. `worker_threads = 2`",
                        ));
                    }
                };
                if value == 0 {
                    return Err(syn::Error::new(span, "`worker_threads` must be at least 1"));
                }
                if worker_threads.replace((value, span)).is_some() {
                    return Err(duplicate());
                }
            }
            "start_paused" => {
                let value = match &pair.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Bool(b), ..
                    }) => b.value,
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "`start_paused` takes `true` or `false`",
                        ));
                    }
                };
                if start_paused.replace((value, span)).is_some() {
                    return Err(duplicate());
                }
            }
            "crate" => {
                let value = string(&pair.value, "crate")?;
                let path = syn::parse_str::<syn::Path>(&value).map_err(|_| {
                    syn::Error::new(span, format!("`crate = \"{value}\"` is not a path"))
                })?;
                if krate.replace(path).is_some() {
                    return Err(duplicate());
                }
            }
            "grace" => {
                let value = string(&pair.value, "grace")?;
                let nanos = parse_duration_nanos(&value).ok_or_else(|| {
                    syn::Error::new(span, format!("`grace = \"{value}\"` is not a duration: use e.g. \"250ms\", \"2s\" or \"0\""))
                })?;
                if grace.replace(nanos).is_some() {
                    return Err(duplicate());
                }
            }
            "mode" => {
                let value = string(&pair.value, "mode")?;
                let parsed = match value.as_str() {
                    "fail" => Mode::Fail,
                    "warn" => Mode::Warn,
                    _ => {
                        return Err(syn::Error::new(
                            span,
                            format!("unknown mode `{value}`: expected \"fail\" or \"warn\""),
                        ));
                    }
                };
                if mode.replace(parsed).is_some() {
                    return Err(duplicate());
                }
            }
            "ignore" => {
                let value = string(&pair.value, "ignore")?;
                if value.is_empty() {
                    return Err(syn::Error::new(span, "`ignore` needs a non-empty pattern"));
                }
                ignore.push(value);
            }
            _ => {
                return Err(syn::Error::new_spanned(
                    &pair.path,
                    format!("unknown argument `{name}`; valid arguments: {VALID}"),
                ));
            }
        }
    }
    let flavor_value = flavor.map_or(Flavor::CurrentThread, |(f, _)| f);
    if let Some((_, span)) = worker_threads {
        if flavor_value != Flavor::MultiThread {
            return Err(syn::Error::new(
                span,
                "`worker_threads` needs `flavor = \"multi_thread\"`",
            ));
        }
    }
    if let Some((true, span)) = start_paused {
        if flavor_value == Flavor::MultiThread {
            return Err(syn::Error::new(
                span,
                "`start_paused` needs the current_thread flavor (tokio's rule)",
            ));
        }
    }
    Ok(Args {
        flavor: flavor_value,
        worker_threads: worker_threads.map(|(n, _)| n),
        start_paused: start_paused.is_some_and(|(b, _)| b),
        krate: krate.unwrap_or_else(|| syn::parse_quote!(::leakcheck)),
        grace,
        ignore,
        mode,
    })
}

fn string(value: &Expr, name: &str) -> syn::Result<String> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.value()),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{name}` takes a string literal"),
        )),
    }
}

/// `250ms`, `2s`, `1.5s`, `100us`, `1m`, `0` → nanoseconds. Mirrors
/// `leakcheck::parse_duration`, which this crate cannot depend on.
fn parse_duration_nanos(value: &str) -> Option<u64> {
    let value = value.trim();
    if value == "0" {
        return Some(0);
    }
    let split = value.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        _ => return None,
    };
    let nanos = number * scale;
    (nanos.is_finite() && nanos >= 0.0 && nanos < u64::MAX as f64).then_some(nanos as u64)
}
