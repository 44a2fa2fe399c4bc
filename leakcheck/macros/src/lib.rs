//! `#[leakcheck::test]`: a drop-in for `#[tokio::test]` that fails the test
//! when tasks it spawned outlive it. Use it through the `leakcheck` crate,
//! which documents it.
//!
//! Parsing lives in `args`, code generation in `expand`.

mod args;
mod expand;

use proc_macro::TokenStream;

/// See `leakcheck::test`.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::test(args.into(), item.into()).into()
}
