//! Code generation: the test function becomes a plain `#[test]` whose body
//! hands the async block to `leakcheck::__private::run_test`. On an error the
//! original function is still emitted next to the `compile_error!`, so IDEs
//! keep resolving it.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemFn, ReturnType};

use crate::args::{self, Flavor, Mode};

pub(crate) fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(err) => return with_item(err, item),
    };
    match args::parse(args).and_then(|args| expand(&args, function)) {
        Ok(tokens) => tokens,
        Err(err) => with_item(err, item),
    }
}

fn with_item(err: syn::Error, item: TokenStream) -> TokenStream {
    let err = err.to_compile_error();
    quote! { #err #item }
}

fn expand(args: &args::Args, function: ItemFn) -> syn::Result<TokenStream> {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            "the `async` keyword is missing from the test function",
        ));
    }
    if !sig.inputs.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.inputs,
            "test functions take no arguments",
        ));
    }
    if let Some(attr) = attrs.iter().find(|a| a.path().is_ident("test")) {
        return Err(syn::Error::new_spanned(
            attr,
            "second test attribute: `#[leakcheck::test]` already makes this a `#[test]`",
        ));
    }
    let krate = &args.krate;
    let name = &sig.ident;
    let flavor = match args.flavor {
        Flavor::CurrentThread => quote!(CurrentThread),
        Flavor::MultiThread => quote!(MultiThread),
        Flavor::Local => quote!(Local),
    };
    let worker_threads = match args.worker_threads {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let start_paused = args.start_paused;
    let grace = match args.grace {
        Some(nanos) => {
            quote!(::core::option::Option::Some(#krate::__private::Duration::from_nanos(#nanos)))
        }
        None => quote!(::core::option::Option::None),
    };
    let ignore = &args.ignore;
    // A test that expects to panic (often: to fail with a leak) must not
    // publish its report as a real failure.
    let expects_panic = attrs.iter().any(|a| a.path().is_ident("should_panic"));
    let mode = match args.mode {
        Some(Mode::Fail) => quote!(::core::option::Option::Some(#krate::__private::Mode::Fail)),
        Some(Mode::Warn) => quote!(::core::option::Option::Some(#krate::__private::Mode::Warn)),
        None => quote!(::core::option::Option::None),
    };
    let (output, output_type) = match &sig.output {
        ReturnType::Default => (quote!(), quote!(())),
        ReturnType::Type(arrow, ty) => (quote!(#arrow #ty), quote!(#ty)),
    };
    // The pinned `dyn Future` annotation lets `?` in the body infer its error
    // type from the declared return type, as in `#[tokio::test]`.
    let body = quote_spanned! {block.span()=>
        let body = async move #block;
        let body: ::core::pin::Pin<&mut dyn ::core::future::Future<Output = #output_type>> = ::core::pin::pin!(body);
    };
    Ok(quote! {
        #(#attrs)*
        #[::core::prelude::v1::test]
        #vis fn #name() #output {
            #body
            #krate::__private::run_test(
                #krate::__private::TestConfig {
                    name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name)),
                    flavor: #krate::__private::Flavor::#flavor,
                    worker_threads: #worker_threads,
                    start_paused: #start_paused,
                    grace: #grace,
                    ignore: &[#(#ignore),*],
                    mode: #mode,
                    expects_panic: #expects_panic,
                },
                body,
            )
        }
    })
}
