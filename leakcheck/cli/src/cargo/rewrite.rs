//! The codemod of one source file: every `#[tokio::test]` attribute (any
//! arguments, `::tokio::test` too, and inside `#[cfg_attr(…, tokio::test)]`)
//! becomes `#[leakcheck::test…]`, as does the wrapped attribute of
//! `#[test_log::test(tokio::test)]`-style wrappers, and the same under a
//! package's rename of tokio (`tokio1 = { package = "tokio" }`).
//!
//! The file is parsed with `syn` and walked with its visitor, so strings,
//! comments and doc text that merely contain `tokio::test` are never
//! touched. Only the bytes of the `tokio` path segment are replaced, located
//! by proc-macro2's span locations: arguments, comments and formatting stay
//! byte-for-byte. Attributes inside macro bodies (`macro_rules!`, macro
//! calls) are token streams, not syntax: they are listed as not rewritten.

use std::ops::Range;

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use syn::punctuated::Punctuated;
use syn::visit::Visit;
use syn::{Attribute, Meta, Path, Token};

/// The path segment written in place of `tokio`.
pub const LEAKCHECK: &str = "leakcheck";

/// What the codemod found in one file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rewritten {
    /// The new text; equal to the input when nothing was rewritten.
    pub text: String,
    /// `#[tokio::test]` attributes rewritten.
    pub rewritten: usize,
    /// `#[leakcheck::test]` attributes already there (a package with these
    /// needs the dev-dependency as much as one with rewritten ones).
    pub already_leakcheck: usize,
    /// 1-based lines of `#[tokio::test]` attributes inside macro bodies,
    /// left as they are.
    pub inside_macros: Vec<usize>,
    /// The out-of-line modules the file declares (`mod name;`): the files
    /// to visit next.
    pub modules: Vec<ModuleDecl>,
}

/// One `mod name;` declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleDecl {
    /// The inline modules (`mod a { … }`) it sits in, outermost first: each
    /// is a directory level (its `#[path]` if it has one, else its name).
    pub within: Vec<String>,
    /// The module's name.
    pub name: String,
    /// Its `#[path = "…"]`, if any.
    pub path: Option<String>,
}

/// A file that is not valid Rust: where and why.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line of the error.
    pub line: usize,
    /// 1-based column of the error.
    pub column: usize,
    /// syn's message.
    pub message: String,
}

/// The name tokio goes by unless a package renames it.
pub const TOKIO: &str = "tokio";

/// Rewrites the `#[tokio::test]` attributes of `source`; `tokio_names` are
/// the names tokio has in the package (`tokio`, and any rename such as
/// `tokio1 = { package = "tokio" }`).
pub fn rewrite(source: &str, tokio_names: &[String]) -> Result<Rewritten, ParseError> {
    let parsed = syn::parse_file(source);
    let result = parsed
        .map_err(|err| {
            let start = err.span().start();
            ParseError {
                line: start.line,
                column: start.column + 1,
                message: err.to_string(),
            }
        })
        .map(|file| {
            // `parse_file` strips a byte-order mark and a shebang line before
            // parsing: spans count from what is left.
            let mut offset = if source.starts_with('\u{feff}') { 3 } else { 0 };
            offset += file.shebang.as_ref().map_or(0, String::len);
            let mut finder = Finder {
                tokio_names: tokio_names.to_vec(),
                ..Finder::default()
            };
            finder.visit_file(&file);
            splice(source, offset, finder)
        });
    // Span locations are kept per thread for every string parsed; a
    // workspace has thousands of files.
    proc_macro2::extra::invalidate_current_thread_spans();
    result
}

fn splice(source: &str, offset: usize, finder: Finder) -> Rewritten {
    let mut text = String::with_capacity(source.len() + finder.tokio_segments.len() * 4);
    let mut copied = 0;
    for range in &finder.tokio_segments {
        let (start, end) = (range.start + offset, range.end + offset);

        text.push_str(&source[copied..start]);
        text.push_str(LEAKCHECK);
        copied = end;
    }
    text.push_str(&source[copied..]);
    Rewritten {
        text,
        rewritten: finder.tokio_segments.len(),
        already_leakcheck: finder.already_leakcheck,
        inside_macros: finder.inside_macros,
        modules: finder.modules,
    }
}

#[derive(Default)]
struct Finder {
    /// What `tokio` is called in the package.
    tokio_names: Vec<String>,
    /// Byte ranges of the `tokio` segments to replace, in source order.
    tokio_segments: Vec<Range<usize>>,
    already_leakcheck: usize,
    inside_macros: Vec<usize>,
    modules: Vec<ModuleDecl>,
    /// The inline modules being visited.
    within: Vec<String>,
}

/// The value of a `#[path = "…"]` attribute among `attributes`.
fn path_attribute(attributes: &[Attribute]) -> Option<String> {
    attributes
        .iter()
        .find_map(|attribute| match &attribute.meta {
            Meta::NameValue(pair) if pair.path.is_ident("path") => match &pair.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(path),
                    ..
                }) => Some(path.value()),
                _ => None,
            },
            _ => None,
        })
}

impl Finder {
    /// Records `path` if it names `tokio::test` or `leakcheck::test`.
    fn check_path(&mut self, path: &Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let arguments_free = path.segments.iter().all(|s| s.arguments.is_none());
        if !arguments_free || segments.len() != 2 || segments[1] != "test" {
            return;
        }
        if self.tokio_names.contains(&segments[0]) {
            let span: Span = path.segments[0].ident.span();
            self.tokio_segments.push(span.byte_range());
        } else if segments[0] == LEAKCHECK {
            self.already_leakcheck += 1;
        }
    }

    /// Checks `meta`'s path, then the metas in its parentheses: the
    /// attributes of `#[cfg_attr(predicate, tokio::test)]` and the wrapped
    /// attribute of `#[test_log::test(tokio::test)]`.
    fn check_meta(&mut self, meta: &Meta) {
        self.check_path(meta.path());
        if let Meta::List(list) = meta {
            if let Ok(nested) =
                list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
            {
                for meta in &nested {
                    self.check_meta(meta);
                }
            }
        }
    }

    /// Lines of `# [tokio::test…]` token sequences in a macro body.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let mut previous_was_pound = false;
        for tree in tokens {
            match &tree {
                TokenTree::Group(group) => {
                    if previous_was_pound
                        && group.delimiter() == Delimiter::Bracket
                        && names_tokio_test(group.stream(), &self.tokio_names)
                    {
                        self.inside_macros.push(group.span().start().line);
                    }
                    self.scan_tokens(group.stream());
                    previous_was_pound = false;
                }
                TokenTree::Punct(punct) => previous_was_pound = punct.as_char() == '#',
                _ => previous_was_pound = false,
            }
        }
    }
}

/// Whether an attribute's tokens start with `tokio :: test` (or `:: tokio :: test`).
fn names_tokio_test(tokens: TokenStream, tokio_names: &[String]) -> bool {
    let words: Vec<String> = tokens
        .into_iter()
        .take(6)
        .map(|tree| tree.to_string())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let rest = match words.as_slice() {
        [":", ":", rest @ ..] => rest,
        rest => rest,
    };
    match rest {
        [name, ":", ":", "test", ..] => tokio_names.iter().any(|n| n == name),
        _ => false,
    }
}

impl<'ast> Visit<'ast> for Finder {
    fn visit_attribute(&mut self, attribute: &'ast Attribute) {
        self.check_meta(&attribute.meta);
    }

    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        let path = path_attribute(&module.attrs);
        if module.content.is_none() {
            self.modules.push(ModuleDecl {
                within: self.within.clone(),
                name: module.ident.to_string(),
                path,
            });
            syn::visit::visit_item_mod(self, module);
            return;
        }
        self.within
            .push(path.unwrap_or_else(|| module.ident.to_string()));
        syn::visit::visit_item_mod(self, module);
        self.within.pop();
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.scan_tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokio() -> Vec<String> {
        vec![TOKIO.to_owned()]
    }

    #[test]
    fn a_renamed_tokio_is_rewritten_too() {
        let names = vec![TOKIO.to_owned(), "tokio1".to_owned()];
        let out = rewrite(
            "#[tokio1::test(crate = \"tokio1\")]\nasync fn a() {}\n",
            &names,
        )
        .unwrap();
        assert_eq!(
            out.text,
            "#[leakcheck::test(crate = \"tokio1\")]\nasync fn a() {}\n"
        );
        assert_eq!(
            rewrite("#[tokio1::test]\nasync fn a() {}\n", &tokio())
                .unwrap()
                .rewritten,
            0
        );
    }

    #[test]
    fn only_the_tokio_segment_changes() {
        let source = "#[tokio::test]\nasync fn a() {}\n\n#[::tokio::test( flavor = \"multi_thread\" , /* two */ worker_threads = 2 )]\nasync fn b() {}\n";
        let out = rewrite(source, &tokio()).unwrap();
        assert_eq!(out.rewritten, 2);
        assert_eq!(
            out.text,
            "#[leakcheck::test]\nasync fn a() {}\n\n#[::leakcheck::test( flavor = \"multi_thread\" , /* two */ worker_threads = 2 )]\nasync fn b() {}\n"
        );
    }

    #[test]
    fn strings_comments_and_other_attributes_are_left_alone() {
        let source = "// #[tokio::test]\n/// `#[tokio::test]` in a doc\nconst S: &str = \"#[tokio::test]\";\n#[tokio::main]\nasync fn main() {}\n#[test]\nfn t() {}\n";
        let out = rewrite(source, &tokio()).unwrap();
        assert_eq!(out.rewritten, 0);
        assert_eq!(out.text, source);
    }

    #[test]
    fn cfg_attr_is_rewritten_and_macro_bodies_are_reported() {
        let source = "#[cfg_attr(feature = \"rt\", tokio::test)]\nasync fn a() {}\nmacro_rules! m {\n    () => {\n        #[tokio::test]\n        async fn b() {}\n    };\n}\n";
        let out = rewrite(source, &tokio()).unwrap();
        assert_eq!(out.rewritten, 1);
        assert!(
            out.text
                .starts_with("#[cfg_attr(feature = \"rt\", leakcheck::test)]")
        );
        assert!(out.text.contains("        #[tokio::test]\n"));
        assert_eq!(out.inside_macros, [5]);
    }

    #[test]
    fn wrapped_test_attributes_are_rewritten() {
        let out = rewrite(
            "#[test_log::test(tokio::test)]\nasync fn a() {}\n",
            &tokio(),
        )
        .unwrap();
        assert_eq!(
            out.text,
            "#[test_log::test(leakcheck::test)]\nasync fn a() {}\n"
        );
    }

    #[test]
    fn byte_order_mark_and_shebang_keep_offsets_right() {
        let source = "\u{feff}#!/usr/bin/env run-cargo-script\n#[tokio::test]\nasync fn a() {}\n";
        let out = rewrite(source, &tokio()).unwrap();
        assert_eq!(
            out.text,
            "\u{feff}#!/usr/bin/env run-cargo-script\n#[leakcheck::test]\nasync fn a() {}\n"
        );
    }

    #[test]
    fn non_ascii_text_before_the_attribute_keeps_offsets_right() {
        let source = "const É: &str = \"ünïcødé tokio::test\";\n#[tokio::test]\nasync fn a() {}\n";
        let out = rewrite(source, &tokio()).unwrap();
        assert!(out.text.contains("\n#[leakcheck::test]\n"));
    }

    #[test]
    fn already_adopted_files_count_their_attributes() {
        let out = rewrite("#[leakcheck::test]\nasync fn a() {}\n", &tokio()).unwrap();
        assert_eq!((out.rewritten, out.already_leakcheck), (0, 1));
    }

    #[test]
    fn module_declarations_are_listed_with_their_nesting() {
        let source = "mod a;\n#[path = \"other.rs\"]\nmod b;\nmod c {\n    mod d;\n}\n";
        let out = rewrite(source, &tokio()).unwrap();
        let decl = |within: &[&str], name: &str, path: Option<&str>| ModuleDecl {
            within: within.iter().map(|s| s.to_string()).collect(),
            name: name.to_owned(),
            path: path.map(str::to_owned),
        };
        assert_eq!(
            out.modules,
            [
                decl(&[], "a", None),
                decl(&[], "b", Some("other.rs")),
                decl(&["c"], "d", None)
            ]
        );
    }

    #[test]
    fn unparsable_files_say_where() {
        let err = rewrite("fn a() {\n    let x = ;\n}\n", &tokio()).unwrap_err();
        assert_eq!(err.line, 2);
    }
}
