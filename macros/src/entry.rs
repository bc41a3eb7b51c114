//! The expansion of `#[wq::main]` and `#[wq::test]`.
//!
//! `async fn NAME() -> Ret { BODY }` becomes
//!
//! ```text
//! fn NAME() -> Ret {
//!     async fn body_fn() -> Ret { BODY }
//!     let body = body_fn();
//!     return match ::wq::Runtime::builder()
//!         .default_scope(..)            // one call per option given
//!         .build()
//!     {
//!         Ok(rt) => rt,
//!         Err(e) => panic!(..),         // a `#[should_panic]` test: print, return
//!     }
//!     .block_on(body);
//! }
//! ```
//!
//! 1. The item is parsed as a function whose body stays unparsed tokens, so a
//!    body with syntax errors still expands (and an IDE still completes in
//!    it). An item that is not a function is given back unchanged beside the
//!    error.
//! 2. The options are parsed ([`crate::options`]) and the signature checked
//!    (`async`, no parameters, no generics). Every mistake becomes a spanned
//!    error.
//! 3. The function is expanded with the options that parsed. With errors, the
//!    expansion is emitted all the same, beside one `compile_error!` per
//!    mistake, so the rest of the user's code still type-checks.
//!
//! The body becomes an inner `async fn` of the same return type, so it is
//! type-checked as the `async fn`'s was (`?`, `return`, and coercions to
//! the return type: an `async` block has no declared output, and a boxed
//! error did not coerce to `Box<dyn Error>` in one), and the function keeps
//! its return type, attributes and visibility. Where the signature has
//! errors (parameters, generics) the body stays an `async move` block,
//! which keeps the parameters in scope, so only the errors given show; so
//! it does where the function may be an associated one, whose `Self` and
//! `impl` parameters an inner item cannot name (a `#[wq::main]` not named
//! `main`, or one that says `Self`): there a `return` of a value that
//! must coerce to the return type needs the coercion written out. The
//! local holding the body and the inner function have `Span::mixed_site`,
//! `__wq_`-prefixed names.

use proc_macro2::{Delimiter, Group, Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{ParseStream, Parser};
use syn::{Attribute, LitStr, Meta, Path, ReturnType, Signature, Token, Visibility, parse_quote};

use crate::options::{self, Errors, Options};

/// Which attribute is being expanded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `#[wq::main]`.
    Main,
    /// `#[wq::test]`.
    Test,
}

impl Kind {
    /// The attribute as the user writes it, for messages.
    fn attr(self) -> &'static str {
        match self {
            Kind::Main => "#[wq::main]",
            Kind::Test => "#[wq::test]",
        }
    }
}

/// A function with its body kept as tokens.
struct AsyncFn {
    attrs: Vec<Attribute>,
    vis: Visibility,
    sig: Signature,
    /// The span of the body's braces.
    brace: proc_macro2::extra::DelimSpan,
    inner_attrs: Vec<Attribute>,
    stmts: TokenStream,
}

impl AsyncFn {
    fn parse(input: ParseStream<'_>, kind: Kind) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let starts_fn = input.peek(Token![fn])
            || input.peek(Token![async])
            || input.peek(Token![const])
            || input.peek(Token![unsafe])
            || input.peek(Token![extern]);
        if !starts_fn {
            return Err(input.error(format!(
                "{} can only be applied to an `async fn`, like `async fn {}() {{ .. }}`",
                kind.attr(),
                match kind {
                    Kind::Main => "main",
                    Kind::Test => "my_test",
                },
            )));
        }
        let sig: Signature = input.parse()?;
        let content;
        let brace = syn::braced!(content in input);
        let inner_attrs = content.call(Attribute::parse_inner)?;
        let stmts: TokenStream = content.parse()?;
        Ok(AsyncFn {
            attrs,
            vis,
            sig,
            brace: brace.span,
            inner_attrs,
            stmts,
        })
    }
}

/// Expands `#[wq::main(args)]` or `#[wq::test(args)]` on `item`.
pub(crate) fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let input = match (|input: ParseStream<'_>| AsyncFn::parse(input, kind)).parse2(item.clone()) {
        Ok(input) => input,
        Err(e) => return with_error(item, e),
    };
    let mut input = input;
    let mut errors = Errors::default();
    let options = options::parse(args, &mut errors);
    check_signature(kind, &input.sig, &mut errors);
    take_repeats(kind, &mut input.attrs, options.krate.as_ref(), &mut errors);
    let tokens = generate(kind, input, &options);
    match errors.into_error() {
        None => tokens,
        Some(e) => with_error(tokens, e),
    }
}

/// `tokens` followed by a `compile_error!` for each error.
fn with_error(mut tokens: TokenStream, error: syn::Error) -> TokenStream {
    tokens.extend(error.into_compile_error());
    tokens
}

/// Pushes an error for each thing about the signature that the expansion
/// cannot honour.
fn check_signature(kind: Kind, sig: &Signature, errors: &mut Errors) {
    let attr = kind.attr();
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            format!("the function under {attr} must be `async`: write `async fn`"),
        ));
    }
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new_spanned(
            constness,
            format!("the function under {attr} cannot be `const`: remove `const`"),
        ));
    }
    if let Some(receiver) = sig.receiver() {
        errors.push(syn::Error::new_spanned(
            receiver,
            format!(
                "the function under {attr} cannot be a method taking `self`: make it a free \
                 or associated function, and call the method from its body"
            ),
        ));
    } else if !sig.inputs.is_empty() {
        let why = match kind {
            Kind::Main => "read the command line with `std::env::args()` instead",
            Kind::Test => "the test harness calls it with none",
        };
        errors.push(syn::Error::new_spanned(
            &sig.inputs,
            format!("the function under {attr} cannot take parameters: {why}"),
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            format!(
                "the function under {attr} cannot be generic: nothing would choose its \
                 parameters; move the generic code into a function its body calls"
            ),
        ));
    } else if let Some(clause) = &sig.generics.where_clause {
        // With no generic parameters, `Generics` prints nothing: the error
        // would point at the attribute. The clause itself is the place.
        errors.push(syn::Error::new_spanned(
            clause,
            format!("the function under {attr} takes no `where` clause: it has no generic parameters to bound"),
        ));
    }
}

/// Takes out of `attrs` another `#[wq::main]` or `#[wq::test]` (or
/// `wq_macros`', or the renamed crate's of a `crate = ".."` option), with
/// an error each: left in, it would expand again over the function this
/// one made, which is not `async`, and say so.
fn take_repeats(kind: Kind, attrs: &mut Vec<Attribute>, krate: Option<&Path>, errors: &mut Errors) {
    let renamed = krate
        .and_then(|k| k.segments.last())
        .map(|s| s.ident.to_string());
    attrs.retain(|attr| {
        let names: Vec<String> = attr
            .path()
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect();
        let repeat = matches!(
            names.as_slice(),
            [.., krate, name] if (krate == "wq" || krate == "wq_macros"
                || renamed.as_deref() == Some(krate.as_str()))
                && (name == "main" || name == "test")
        );
        if repeat {
            let other = format!("#[wq::{}]", names[names.len() - 1]);
            let message = if other == kind.attr() {
                format!("{other} is applied to this function twice; keep one")
            } else {
                format!(
                    "{} and {other} are both applied to this function; keep one",
                    kind.attr()
                )
            };
            errors.push(syn::Error::new_spanned(attr, message));
        }
        !repeat
    });
}

/// Whether `attr` is `#[should_panic]` (with or without its `expected`,
/// bare or as the prelude's `core`/`std` path), or a `#[cfg_attr(..)]`
/// that may apply one. (rustc applies or drops an item's `cfg_attr`s before
/// it calls an attribute macro, so the macro sees the outcome: a
/// `cfg_attr` whose condition is false is no `should_panic`,
/// `runtime/tests/macros.rs` checks both ways. The branch is kept for a
/// caller that passes the item unconfigured.)
fn is_should_panic(attr: &Attribute) -> bool {
    if attr.path().is_ident("cfg_attr") {
        // `cfg_attr(condition, attr, ...)`: any `should_panic` among them.
        return attr
            .parse_args_with(syn::punctuated::Punctuated::<Meta, syn::Token![,]>::parse_terminated)
            .is_ok_and(|metas| metas.iter().skip(1).any(|m| names_should_panic(m.path())));
    }
    names_should_panic(attr.path())
}

/// `should_panic`, or `{core,std}::prelude::*::should_panic`.
fn names_should_panic(path: &Path) -> bool {
    let names: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    match names.as_slice() {
        [name] => name == "should_panic",
        [krate, prelude, _, name] => {
            (krate == "core" || krate == "std") && prelude == "prelude" && name == "should_panic"
        }
        _ => false,
    }
}

/// Whether `attr` is `#[test]` or the prelude's `#[::core::prelude::*::test]`
/// (or `std`'s), which already makes the function a test.
fn is_test_attribute(attr: &Attribute) -> bool {
    let Meta::Path(path) = &attr.meta else {
        return false;
    };
    if path.segments.iter().any(|s| !s.arguments.is_none()) {
        return false;
    }
    let names: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    match names.as_slice() {
        [test] => path.leading_colon.is_none() && test == "test",
        [krate, prelude, _, test] => {
            (krate == "core" || krate == "std") && prelude == "prelude" && test == "test"
        }
        _ => false,
    }
}

/// Whether `output` names an `impl Trait` type, which cannot be written as a
/// `Future::Output`.
fn mentions_impl(output: &ReturnType) -> bool {
    mentions(output.to_token_stream(), "impl")
}

/// Whether `tokens` hold the identifier `word`, at any depth.
fn mentions(tokens: TokenStream, word: &str) -> bool {
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => ident == word,
        TokenTree::Group(group) => mentions(group.stream(), word),
        _ => false,
    })
}

/// The expanded function.
fn generate(kind: Kind, input: AsyncFn, options: &Options) -> TokenStream {
    let AsyncFn {
        attrs,
        vis,
        mut sig,
        brace,
        inner_attrs,
        stmts,
    } = input;
    // A signature the checks passed: the body becomes an inner `async fn`
    // of it (below).
    let clean = sig.asyncness.is_some()
        && sig.constness.is_none()
        && sig.inputs.is_empty()
        && sig.variadic.is_none()
        && sig.generics.params.is_empty()
        && sig.generics.where_clause.is_none();
    sig.asyncness = None;
    // Reported (`check_signature`); left on, rustc added errors of its own
    // (a `const fn` calling the runtime's builder) to the one given.
    sig.constness = None;
    // Parameters were reported (`check_signature`): the function is
    // emitted without them, so that rustc adds no error of its own on the
    // attribute (`main` of the wrong type, a test taking arguments), and
    // each is a local of its type, so that the body still type-checks
    // against them (its other errors show). Never run: the
    // `compile_error!` stops the build.
    let mut params = TokenStream::new();
    let mut params_allow = None;
    // (Kept where a parameter's type is an `impl Trait`: a local cannot
    // have one, and rustc's error on the attribute is the lesser noise.)
    if sig.receiver().is_none()
        && !sig.inputs.is_empty()
        && !mentions(sig.inputs.to_token_stream(), "impl")
    {
        for input in std::mem::take(&mut sig.inputs) {
            if let syn::FnArg::Typed(syn::PatType { pat, ty, .. }) = input {
                params.extend(quote!(let #pat: #ty = ::core::unreachable!();));
            }
        }
        params_allow = Some(quote!(#[allow(unreachable_code, unused_variables)]));
    }
    let attr = kind.attr();
    let krate: Path = options.krate.clone().unwrap_or_else(|| parse_quote!(::wq));
    // Pattern names: `mixed_site` keeps them apart from the user's locals, and
    // the prefix from the user's constants (a constant of the same name in
    // scope would turn the binding into a constant pattern).
    let body = Ident::new("__wq_body", Span::mixed_site());
    let err = Ident::new("__wq_err", Span::mixed_site());
    let ok = Ident::new("__wq_ok", Span::mixed_site());

    // A runtime that cannot be built panics, which a `#[should_panic]`
    // test would take for the panic it expects, passing without running
    // its body: there, the error is printed and the test returns (it must
    // return `()`), so it fails as "did not panic" with the error shown.
    // (A `#[should_panic]` test must return `()`: with another type,
    // rustc's error says so, and the panic stays.)
    let returns_unit = match &sig.output {
        ReturnType::Default => true,
        ReturnType::Type(_, ty) => matches!(&**ty, syn::Type::Tuple(t) if t.elems.is_empty()),
    };
    let should_panic = kind == Kind::Test && returns_unit && attrs.iter().any(is_should_panic);
    let fail = |msg: &LitStr, span: Span| {
        if should_panic {
            let msg = LitStr::new(
                &format!(
                    "{}; this #[should_panic] test did not run its body (the panic it expects must come from the body, not from the runtime's options)",
                    msg.value()
                ),
                span,
            );
            quote_spanned!(span=> { ::std::eprintln!(#msg, #err); return; })
        } else {
            quote_spanned!(span=> ::core::panic!(#msg, #err))
        }
    };

    let mut calls = TokenStream::new();
    if let Some(scope) = &options.scope {
        let variant = Ident::new(scope.value, scope.span);
        calls.extend(quote_spanned!(scope.span=> .default_scope(#krate::Scope::#variant)));
    }
    if let Some(wake) = &options.wake {
        let variant = Ident::new(wake.value, wake.span);
        calls.extend(quote_spanned!(wake.span=> .wake_mode(#krate::WakeMode::#variant)));
    }
    if let Some(topology) = &options.topology {
        let msg = LitStr::new(
            &format!("{attr}: invalid `topology` option: {{}}"),
            topology.span(),
        );
        let fail = fail(&msg, topology.span());
        calls.extend(quote_spanned! {topology.span()=>
            .topology(
                match #krate::Topology::synthetic(#topology) {
                    ::core::result::Result::Ok(#ok) => #ok,
                    ::core::result::Result::Err(#err) => #fail,
                }
            )
        });
    }
    if let Some(workers) = &options.workers {
        let n = proc_macro2::Literal::u64_unsuffixed(workers.value);
        let mut n = TokenTree::Literal(n);
        n.set_span(workers.span);
        calls.extend(quote_spanned!(workers.span=> .max_workers_per_pool(#n)));
    }

    // Tests are many: pin each body behind `dyn Future` so that `block_on` is
    // compiled once per output type, not once per test (as tokio does). Not
    // possible when the output type is an `impl Trait`, nor `!` (unstable
    // anywhere but a return type: `Output = !` does not compile).
    let never =
        matches!(&sig.output, ReturnType::Type(_, ty) if matches!(**ty, syn::Type::Never(_)));
    let pin = (kind == Kind::Test && !mentions_impl(&sig.output) && !never).then(|| {
        let output = match &sig.output {
            ReturnType::Default => quote!(()),
            ReturnType::Type(_, ty) => quote!(#ty),
        };
        quote! {
            let #body = ::core::pin::pin!(#body);
            let #body: ::core::pin::Pin<&mut dyn ::core::future::Future<Output = #output>> = #body;
        }
    });

    let test_attr = (kind == Kind::Test && !attrs.iter().any(is_test_attribute))
        .then(|| quote!(#[::core::prelude::v1::test]));

    // Spanned on the body's closing brace, so that a mismatch between the
    // body's type and the return type points at the body. The explicit
    // `return` keeps lints on a diverging body (`loop {}`) quiet, as in tokio.
    let build_msg = LitStr::new(
        &format!(
            "{attr}: failed to build the wq runtime: {{}} (where the attribute's options cannot say what the error asks for, build the runtime by hand: wq::Runtime::builder()...build()?.block_on(..))"
        ),
        brace.close(),
    );
    let fail = fail(&build_msg, brace.close());
    let run = quote_spanned! {brace.close()=>
        #[allow(
            unreachable_code,
            clippy::needless_return,
            clippy::diverging_sub_expression
        )]
        {
            return match #krate::Runtime::builder()
                #calls
                .build()
            {
                ::core::result::Result::Ok(#ok) => #ok,
                ::core::result::Result::Err(#err) => #fail,
            }
            .block_on(#body);
        }
    };

    let mut block = Group::new(Delimiter::Brace, stmts);
    block.set_span(brace.join());
    // The body is an inner `async fn` with the function's return type, so
    // it is checked against that type as the `async fn` itself was: an
    // `async` block (or closure) has no declared output, and a `return
    // Err(Box::new(e))` under `-> Result<(), Box<dyn Error>>` did not
    // coerce. A signature with errors keeps the block: its parameters
    // stay in scope for the body, and no error is added to the ones given.
    // So does a function that may be an associated one (an inner item
    // cannot name `Self`, nor its `impl`'s generic parameters): a
    // `#[wq::main]` not named `main`, or one whose signature or body says
    // `Self`. A test cannot be associated (libtest refuses it), so a
    // `Self` in its body is a nested item's (a hand-written future's
    // `impl`), and keeps the inner `async fn`.
    let inner = clean
        && (kind == Kind::Test
            || (sig.ident == "main"
                && !mentions(sig.output.to_token_stream(), "Self")
                && !mentions(block.stream(), "Self")));
    let future = if inner {
        let body_fn = Ident::new("__wq_async_body", Span::mixed_site());
        let unsafety = &sig.unsafety;
        let output = &sig.output;
        let call = match unsafety {
            Some(_) => quote!(unsafe { #body_fn() }),
            None => quote!(#body_fn()),
        };
        quote! {
            async #unsafety fn #body_fn() #output #block
            let #body = #call;
        }
    } else {
        quote!(let #body = async move #block;)
    };
    quote! {
        #test_attr
        #(#attrs)*
        #params_allow
        #vis #sig {
            #(#inner_attrs)*
            #params
            #future
            #pin
            #run
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expands and returns the output's text.
    fn expand_str(kind: Kind, args: TokenStream, item: TokenStream) -> String {
        expand(kind, args, item).to_string()
    }

    /// Expands, checks the output is a function, and returns it.
    fn expand_fn(kind: Kind, args: TokenStream, item: TokenStream) -> syn::ItemFn {
        syn::parse2(expand(kind, args, item)).expect("the expansion is one function")
    }

    #[test]
    fn main_expands_to_a_blocking_fn() {
        let f = expand_fn(
            Kind::Main,
            quote!(),
            quote!(
                async fn main() {
                    run().await;
                }
            ),
        );
        assert!(f.sig.asyncness.is_none());
        assert_eq!(f.sig.ident, "main");
        let text = f.to_token_stream().to_string();
        assert!(
            text.contains(
                "async fn __wq_async_body () { run () . await ; } let __wq_body = __wq_async_body () ;"
            ),
            "{text}"
        );
        assert!(
            text.contains(":: wq :: Runtime :: builder () . build ()"),
            "{text}"
        );
        assert!(text.contains(". block_on (__wq_body)"), "{text}");
        assert!(!text.contains("test"), "{text}");
    }

    #[test]
    fn main_keeps_attributes_visibility_and_return_type() {
        let f = expand_fn(
            Kind::Main,
            quote!(),
            quote! {
                #[allow(unused)]
                pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
                    #![allow(dead_code)]
                    Ok(())
                }
            },
        );
        // syn's `ItemFn` files the body's inner attributes with the outer ones.
        let attrs: Vec<String> = f
            .attrs
            .iter()
            .map(|a| a.to_token_stream().to_string())
            .collect();
        assert_eq!(attrs, ["# [allow (unused)]", "# ! [allow (dead_code)]"]);
        assert!(matches!(f.vis, Visibility::Public(_)));
        let expected: ReturnType = parse_quote!(-> Result<(), Box<dyn std::error::Error>>);
        assert_eq!(
            f.sig.output.to_token_stream().to_string(),
            expected.to_token_stream().to_string()
        );
    }

    #[test]
    fn options_become_builder_calls_in_order() {
        let text = expand_str(
            Kind::Main,
            quote!(
                workers = 4,
                topology = "core:2 pu:2",
                wake = "under_lock",
                scope = "numa"
            ),
            quote!(
                async fn main() {}
            ),
        );
        let calls = [
            ". default_scope (:: wq :: Scope :: Numa)",
            ". wake_mode (:: wq :: WakeMode :: UnderLock)",
            ". topology (match :: wq :: Topology :: synthetic (\"core:2 pu:2\")",
            "\"#[wq::main]: invalid `topology` option: {}\"",
            ". max_workers_per_pool (4)",
            ". build ()",
        ];
        let mut at = 0;
        for call in calls {
            let found = text[at..]
                .find(call)
                .unwrap_or_else(|| panic!("{call} in {text}"));
            at += found + call.len();
        }
    }

    #[test]
    fn crate_option_renames_every_path() {
        let text = expand_str(
            Kind::Main,
            quote!(crate = "my::wq", scope = "cpu"),
            quote!(
                async fn main() {}
            ),
        );
        assert!(text.contains("my :: wq :: Runtime :: builder ()"), "{text}");
        assert!(text.contains("my :: wq :: Scope :: Cpu"), "{text}");
        assert_eq!(
            text.matches("wq ::").count(),
            text.matches("my :: wq ::").count()
        );
    }

    /// A repeat of the attribute under its renamed crate's path is caught
    /// too (it read as a second expansion over a function no longer
    /// `async`: "must be `async`", on an `async fn`).
    #[test]
    fn a_repeat_under_the_renamed_crate_is_caught() {
        let text = expand_str(
            Kind::Test,
            quote!(crate = "my_wq"),
            quote!(
                #[my_wq::test(crate = "my_wq")]
                async fn t() {}
            ),
        );
        assert!(text.contains("applied to this function twice"), "{text}");
        assert!(!text.contains("my_wq :: test"), "{text}");
    }

    /// With an error in the signature the body stays an `async move`
    /// block, its parameters in scope (an inner `async fn` would add
    /// "cannot find value" errors to the one given).
    #[test]
    fn a_signature_with_errors_keeps_the_async_block() {
        let text = expand_str(
            Kind::Main,
            quote!(),
            quote!(
                async fn main(n: u8) {
                    n;
                }
            ),
        );
        assert!(
            text.contains("let __wq_body = async move { n ; } ;"),
            "{text}"
        );
        assert!(!text.contains("__wq_async_body"), "{text}");
    }

    /// A parameter of an `impl Trait` type keeps the signature as written
    /// (a local cannot have that type: rustc would add an error of its own
    /// on the `let` instead of the one on the attribute).
    #[test]
    fn a_parameter_of_an_impl_type_keeps_the_signature() {
        let text = expand_str(
            Kind::Main,
            quote!(),
            quote!(
                async fn main(f: impl Fn()) {
                    f();
                }
            ),
        );
        assert!(text.contains("fn main (f : impl Fn ())"), "{text}");
        assert!(!text.contains("unreachable !"), "{text}");
        assert!(text.contains("cannot take parameters"), "{text}");
    }

    /// A `#[wq::main]` that may be associated keeps the `async` block: an
    /// inner `async fn` could name neither `Self` nor its `impl`'s
    /// parameters.
    #[test]
    fn a_main_that_may_be_associated_keeps_the_async_block() {
        for item in [
            quote!(
                async fn run() -> u8 {
                    1
                }
            ),
            quote!(
                async fn main() {
                    Self::go().await
                }
            ),
            quote!(
                async fn main() -> Self {
                    App
                }
            ),
        ] {
            let text = expand_str(Kind::Main, quote!(), item);
            assert!(text.contains("let __wq_body = async move"), "{text}");
            assert!(!text.contains("__wq_async_body"), "{text}");
        }
        let text = expand_str(
            Kind::Test,
            quote!(),
            quote!(
                async fn run() {}
            ),
        );
        assert!(text.contains("__wq_async_body"), "{text}");
        // A test cannot be associated: a `Self` in its body is a nested
        // item's (a hand-written future), and the body stays an inner
        // `async fn`, whose declared output coerces its `return`s.
        let text = expand_str(
            Kind::Test,
            quote!(),
            quote!(
                async fn t() -> Result<(), Box<dyn std::error::Error>> {
                    struct Y;
                    impl Y {
                        fn new() -> Self {
                            Y
                        }
                    }
                    Ok(())
                }
            ),
        );
        assert!(text.contains("__wq_async_body"), "{text}");
    }

    /// An `unsafe` function's body is an inner `async unsafe fn` (the
    /// keywords in the order Rust takes them: `unsafe async fn` did not
    /// parse) called in an `unsafe` block.
    #[test]
    fn an_unsafe_main_expands_to_code_that_parses() {
        let out = expand(
            Kind::Main,
            quote!(),
            quote!(
                pub async unsafe fn main() -> u8 {
                    3
                }
            ),
        );
        let f: syn::ItemFn = syn::parse2(out).unwrap();
        let body = f.block.to_token_stream().to_string();
        assert!(body.contains("async unsafe fn __wq_async_body"), "{body}");
        assert!(body.contains("unsafe { __wq_async_body () }"), "{body}");
        let inner = f
            .block
            .stmts
            .iter()
            .any(|s| matches!(s, syn::Stmt::Item(syn::Item::Fn(_))));
        assert!(inner, "{body}");
    }

    #[test]
    fn errors_come_beside_the_expansion() {
        let text = expand_str(
            Kind::Main,
            quote!(scope = "l3", wake = "deferred"),
            quote!(
                fn main(x: u32) {}
            ),
        );
        assert_eq!(text.matches("compile_error").count(), 3, "{text}");
        assert!(text.contains("invalid `scope` value"), "{text}");
        assert!(text.contains("must be `async`"), "{text}");
        assert!(text.contains("cannot take parameters"), "{text}");
        // The expansion is there, with the options that parsed, the
        // parameter a local of its type (the signature without it: rustc
        // adds no "`main` has the wrong type" of its own).
        assert!(text.contains("fn main ()"), "{text}");
        assert!(
            text.contains("let x : u32 = :: core :: unreachable ! ()"),
            "{text}"
        );
        assert!(
            text.contains(". wake_mode (:: wq :: WakeMode :: Deferred)"),
            "{text}"
        );
        assert!(!text.contains("default_scope"), "{text}");
    }

    #[test]
    fn generic_and_const_fns_are_rejected() {
        let text = expand_str(
            Kind::Main,
            quote!(),
            quote!(
                async fn main<T>() {}
            ),
        );
        assert!(text.contains("cannot be generic"), "{text}");
        let text = expand_str(
            Kind::Test,
            quote!(),
            quote!(
                async fn t()
                where
                    u8: Copy,
                {
                }
            ),
        );
        // Not "generic": it has no parameters (and the error is on the
        // clause, not the attribute).
        assert!(text.contains("takes no `where` clause"), "{text}");
        let text = expand_str(
            Kind::Main,
            quote!(),
            quote!(
                const fn main() {}
            ),
        );
        assert!(text.contains("cannot be `const`"), "{text}");
        // Reported, and taken off: rustc adds no errors of its own for a
        // `const fn` calling the runtime's builder.
        assert!(!text.contains("const fn"), "{text}");
    }

    #[test]
    fn non_fn_item_is_given_back_with_an_error() {
        let text = expand_str(
            Kind::Main,
            quote!(),
            quote!(
                pub struct S;
            ),
        );
        assert!(text.starts_with("pub struct S ;"), "{text}");
        assert!(
            text.contains("#[wq::main] can only be applied to an `async fn`"),
            "{text}"
        );
        // A body that does not parse is still expanded: it stays tokens.
        let text = expand_str(Kind::Main, quote!(), quote!(async fn main() { let = ; }));
        assert!(
            text.contains("async fn __wq_async_body () { let = ; }"),
            "{text}"
        );
        assert!(!text.contains("compile_error"), "{text}");
    }

    #[test]
    fn test_adds_the_test_attribute_and_pins_the_body() {
        let f = expand_fn(
            Kind::Test,
            quote!(),
            quote!(
                async fn t() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert_eq!(
            f.attrs[0].to_token_stream().to_string(),
            "# [:: core :: prelude :: v1 :: test]"
        );
        let text = f.block.to_token_stream().to_string();
        assert!(
            text.contains("Future < Output = Result < () , E > >"),
            "{text}"
        );
        assert!(
            text.contains("\"#[wq::test]: failed to build the wq runtime: {} (where the attribute's options cannot say what the error asks for, build the runtime by hand: wq::Runtime::builder()...build()?.block_on(..))\""),
            "{text}"
        );
    }

    /// A `#[should_panic]` test whose runtime cannot be built prints the
    /// error and returns (failing as "did not panic"); every other test,
    /// and `main`, panics.
    #[test]
    fn a_should_panic_test_returns_instead_of_panicking_when_its_runtime_fails() {
        let returns = |item: TokenStream| {
            let text = expand_str(Kind::Test, quote!(topology = "core:2"), item);
            let ret = text.contains(":: std :: eprintln !") && text.contains("return ;");
            assert_eq!(ret, !text.contains(":: core :: panic !"), "{text}");
            ret
        };
        for attr in [
            quote!(#[should_panic]),
            quote!(#[should_panic(expected = "boom")]),
            quote!(#[should_panic = "boom"]),
            quote!(#[::core::prelude::v1::should_panic]),
            quote!(#[cfg_attr(unix, should_panic)]),
            quote!(#[cfg_attr(all(), ignore, should_panic(expected = "x"))]),
        ] {
            assert!(returns(quote!(#attr async fn t() {})), "{attr}");
            assert!(returns(quote!(#attr async fn t() -> () {})), "{attr}");
        }
        // Not a `should_panic`, or a return type rustc refuses for one.
        assert!(!returns(quote!(
            async fn t() {}
        )));
        assert!(!returns(quote!(
            #[my::should_panic]
            async fn t() {}
        )));
        assert!(!returns(quote!(
            #[cfg_attr(unix, ignore)]
            async fn t() {}
        )));
        assert!(!returns(quote!(
            #[should_panic]
            async fn t() -> Result<(), String> {
                Ok(())
            }
        )));
        let main = expand_str(
            Kind::Main,
            quote!(),
            quote!(
                #[should_panic]
                async fn main() {}
            ),
        );
        assert!(main.contains(":: core :: panic !"), "{main}");
    }

    #[test]
    fn test_keeps_an_existing_test_attribute() {
        for existing in [
            quote!(#[test]),
            quote!(#[core::prelude::v1::test]),
            quote!(#[::std::prelude::rust_2021::test]),
        ] {
            let f = expand_fn(
                Kind::Test,
                quote!(),
                quote!(#existing #[should_panic] async fn t() {}),
            );
            assert_eq!(f.attrs.len(), 2, "{existing}");
        }
        let f = expand_fn(
            Kind::Test,
            quote!(),
            quote!(
                #[my::test]
                async fn t() {}
            ),
        );
        assert_eq!(f.attrs.len(), 2);
    }

    #[test]
    fn test_with_impl_output_is_not_pinned() {
        let text = expand_str(
            Kind::Test,
            quote!(),
            quote!(
                async fn t() -> impl std::process::Termination {}
            ),
        );
        assert!(!text.contains("dyn"), "{text}");
    }

    #[test]
    fn test_with_parameters_is_rejected() {
        let text = expand_str(
            Kind::Test,
            quote!(),
            quote!(
                async fn t(n: u8) {}
            ),
        );
        assert!(
            text.contains("cannot take parameters: the test harness calls it with none"),
            "{text}"
        );
    }

    /// A method is told apart from a function with parameters: the advice
    /// for those (read `std::env::args()`) is no answer to `self`.
    #[test]
    fn a_method_is_told_to_be_a_function() {
        for kind in [Kind::Main, Kind::Test] {
            let text = expand_str(
                kind,
                quote!(),
                quote!(
                    async fn run(&self, n: u8) {}
                ),
            );
            assert!(text.contains("cannot be a method taking `self`"), "{text}");
            assert!(!text.contains("cannot take parameters"), "{text}");
        }
    }
}
