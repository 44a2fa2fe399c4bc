//! Code generation. Like tokio-macros, the test becomes a plain `#[test]`
//! whose body is pinned as a `dyn Future` and whose runtime builder is set up
//! in the user's crate through the tokio path (so each option compiles against
//! the user's tokio features and is reported at its argument); the builder and
//! the body are then handed to `leakcheck::__private::run_test`, which installs
//! the tracker, runs and verifies. On an error the function is still expanded
//! (with default arguments) next to the `compile_error!`, so IDEs keep
//! resolving it.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::{AttrStyle, Attribute, ItemFn, ReturnType, Type};

use crate::args::{self, Args, Flavor, MACRO_NAME, Mode, UnhandledPanic};

pub(crate) fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(err) => {
            let err = err.to_compile_error();
            return quote! { #item #err };
        }
    };
    match check_function(&function).and_then(|()| args::parse(args)) {
        Ok(args) => expand(&args, function),
        Err(err) => {
            let expanded = expand(&Args::default(), function);
            let err = err.to_compile_error();
            quote! { #expanded #err }
        }
    }
}

fn check_function(function: &ItemFn) -> syn::Result<()> {
    if let Some(attr) = function.attrs.iter().find(|attr| is_test_attribute(attr)) {
        return Err(syn::Error::new_spanned(
            attr,
            "second test attribute is supplied, consider removing or changing the order of your test attributes",
        ));
    }
    if function.sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            function.sig.fn_token,
            "the `async` keyword is missing from the function declaration",
        ));
    }
    Ok(())
}

/// `#[test]`, `#[core::prelude::*::test]` or `#[std::prelude::*::test]`
/// (tokio-macros' rule; other attributes named `…::test` are wrappers such as
/// `#[test_log::test]` and may sit beside this one).
fn is_test_attribute(attr: &Attribute) -> bool {
    let syn::Meta::Path(path) = &attr.meta else {
        return false;
    };
    if path.leading_colon.is_none() && path.is_ident("test") {
        return true;
    }
    let segments: Vec<_> = path.segments.iter().collect();
    match segments[..] {
        [first, prelude, _, test] => {
            segments.iter().all(|segment| segment.arguments.is_none())
                && (first.ident == "core" || first.ident == "std")
                && prelude.ident == "prelude"
                && test.ident == "test"
        }
        _ => false,
    }
}

fn expand(args: &Args, function: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = function;
    sig.asyncness = None;
    let lc = args.leakcheck_crate();
    let tokio = match &args.tokio_crate {
        Some(path) => path.to_token_stream(),
        None => quote!(#lc::__private::tokio),
    };
    // Inner attributes of the body (`#![allow(…)]`) cannot stay on the block
    // the body becomes: lift them onto the function, as tokio-macros does.
    let attrs: Vec<Attribute> = attrs
        .into_iter()
        .map(|mut attr| {
            attr.style = AttrStyle::Outer;
            attr
        })
        .collect();
    // A test that expects to panic (often: to fail with a leak) must not
    // publish its report as a real failure.
    let expects_panic = attrs.iter().any(|a| a.path().is_ident("should_panic"));
    // `#[rstest]` below this attribute makes one test per case out of the
    // function, all running this expansion.
    let named_by_libtest = attrs.iter().any(|a| {
        a.path()
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "rstest")
    });

    let output_type = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    // A body with a result hands it to `run_test`, which reports it (std's
    // `Error: …` line) before any leak report and returns its exit code, so
    // the test returns that code: libtest fails it exactly as it fails a
    // returned `Err`.
    let returns_unit = match &sig.output {
        ReturnType::Default => true,
        ReturnType::Type(_, ty) => matches!(&**ty, Type::Tuple(t) if t.elems.is_empty()),
    };
    if !returns_unit {
        sig.output = syn::parse_quote!(-> ::std::process::ExitCode);
    }

    let checks = checks(args, &lc);
    let builder = builder(args, &lc, &tokio);
    let config = config(args, &lc, &sig.ident, expects_panic, named_by_libtest);
    let run = quote! { #lc::__private::run_test(#config, builder, body) };
    let finish = if returns_unit {
        quote! { let _: ::std::process::ExitCode = #run; }
    } else {
        quote! { return #run; }
    };
    quote! {
        #checks
        #(#attrs)*
        #[::core::prelude::v1::test]
        #vis #sig {
            let body = async #block;
            // The pinned `dyn Future` lets `?` in the body infer its error
            // type from the declared return type, as in `#[tokio::test]`.
            let body: ::core::pin::Pin<&mut dyn ::core::future::Future<Output = #output_type>> =
                ::core::pin::pin!(body);
            #[allow(clippy::needless_return, clippy::diverging_sub_expression)]
            {
                #builder
                #finish
            }
        }
    }
}

/// The runtime builder, set up as `#[tokio::test]` sets it up.
fn builder(args: &Args, lc: &syn::Path, tokio: &TokenStream) -> TokenStream {
    let constructor = match args.flavor() {
        Flavor::CurrentThread | Flavor::Local => quote!(new_current_thread),
        Flavor::MultiThread => quote!(new_multi_thread),
    };
    let mut setup = quote! {
        let mut builder = #tokio::runtime::Builder::#constructor();
    };
    if let Some((workers, span)) = args.worker_threads {
        setup.extend(quote_spanned! {span=> builder.worker_threads(#workers); });
    }
    if let Some((paused, span)) = args.start_paused {
        setup.extend(quote_spanned! {span=> builder.start_paused(#paused); });
    }
    if let Some((behavior, span)) = args.unhandled_panic {
        let behavior = match behavior {
            UnhandledPanic::Ignore => quote!(Ignore),
            UnhandledPanic::ShutdownRuntime => quote!(ShutdownRuntime),
        };
        // Without the cfg the check beside the function reports it.
        setup.extend(quote_spanned! {span=>
            #lc::__private::tokio_unstable_only!(then {
                builder.unhandled_panic(#tokio::runtime::UnhandledPanic::#behavior);
            });
        });
    }
    if let Some((name, span)) = &args.name {
        setup.extend(quote_spanned! {*span=> builder.name(#name); });
    }
    setup.extend(quote! { builder.enable_all(); });
    setup
}

/// Compile-time checks emitted beside the function rather than in it, so
/// they are reported even where `#[test]` strips the function (a build
/// without `--test`, as trybuild makes).
fn checks(args: &Args, lc: &syn::Path) -> TokenStream {
    let mut checks = TokenStream::new();
    if let Some(grace) = &args.grace {
        // Through the core's own duration parser, as `LEAKCHECK_GRACE` is read.
        let message = format!(
            "`grace = {:?}` is not a duration: use e.g. \"250ms\", \"2s\" or \"0\"",
            grace.value()
        );
        checks.extend(quote_spanned! {grace.span()=>
            const _: () = if #lc::parse_duration(#grace).is_none() {
                ::core::panic!(#message)
            };
        });
    }
    if let Some((_, span)) = args.unhandled_panic {
        let message = format!(
            "`unhandled_panic` needs tokio's unstable API: build with `--cfg tokio_unstable` (as `#[tokio::test(unhandled_panic = …)]` does), for example with `cargo leakcheck test`, or remove the argument from `#[{MACRO_NAME}]`"
        );
        // The whole invocation at the argument, so the error points there.
        let lc = respanned(lc.to_token_stream(), span);
        checks.extend(quote_spanned! {span=>
            #lc::__private::tokio_unstable_only!(require #message);
        });
    }
    checks
}

fn respanned(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tree| {
            if let TokenTree::Group(group) = &tree {
                let mut inner = Group::new(group.delimiter(), respanned(group.stream(), span));
                inner.set_span(span);
                tree = TokenTree::Group(inner);
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}

/// leakcheck's part: what to check and how to fail.
fn config(
    args: &Args,
    lc: &syn::Path,
    name: &syn::Ident,
    expects_panic: bool,
    named_by_libtest: bool,
) -> TokenStream {
    let flavor = match args.flavor() {
        Flavor::CurrentThread => quote!(CurrentThread),
        Flavor::MultiThread => quote!(MultiThread),
        Flavor::Local => quote!(Local),
    };
    let grace = match &args.grace {
        // Parsed at compile time; a bad value is reported by `checks`.
        Some(grace) => quote_spanned! {grace.span()=> {
            const GRACE: ::core::option::Option<#lc::__private::Duration> = #lc::parse_duration(#grace);
            GRACE
        }},
        None => quote!(::core::option::Option::None),
    };
    let mode = match args.mode {
        Some(Mode::Fail) => quote!(::core::option::Option::Some(#lc::__private::Mode::Fail)),
        Some(Mode::Warn) => quote!(::core::option::Option::Some(#lc::__private::Mode::Warn)),
        None => quote!(::core::option::Option::None),
    };
    let ignore = &args.ignore;
    quote! {
        #lc::__private::TestConfig {
            name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name)),
            flavor: #lc::__private::Flavor::#flavor,
            grace: #grace,
            ignore: &[#(#ignore),*],
            mode: #mode,
            expects_panic: #expects_panic,
            named_by_libtest: #named_by_libtest,
        }
    }
}
