//! The options of `#[wq::main(...)]` and `#[wq::test(...)]`.
//!
//! Options are comma-separated `name = value` pairs, each optional and each
//! given at most once:
//!
//! | option     | value                                   | builder call                  |
//! |------------|-----------------------------------------|-------------------------------|
//! | `scope`    | `"cpu"`, `"smt"`, `"cache_shard"`, `"cache"`, `"numa"`, `"system"` | `.default_scope(Scope::..)` |
//! | `wake`     | `"deferred"`, `"under_lock"`            | `.wake_mode(WakeMode::..)`    |
//! | `topology` | an hwloc synthetic string               | `.topology(Topology::synthetic(..))` |
//! | `workers`  | a positive integer literal              | `.max_workers_per_pool(N)`    |
//! | `crate`    | a path string, for a renamed `wq`       | (prefix of every path)        |
//!
//! Parsing does not stop at the first bad option: every mistake gets its own
//! error, spanned on the offending token, and the options that were right are
//! kept so that the best-effort expansion beside the errors is as close as
//! possible to what the user meant.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Expr, Lit, LitStr, Meta, Path, Token};

/// The option names, in the order the errors list them.
pub(crate) const OPTION_NAMES: [&str; 5] = ["scope", "wake", "topology", "workers", "crate"];

/// Each `scope` value and the `wq::Scope` variant it names.
pub(crate) const SCOPES: [(&str, &str); 6] = [
    ("cpu", "Cpu"),
    ("smt", "Smt"),
    ("cache_shard", "CacheShard"),
    ("cache", "Cache"),
    ("numa", "Numa"),
    ("system", "System"),
];

/// Each `wake` value and the `wq::WakeMode` variant it names.
pub(crate) const WAKE_MODES: [(&str, &str); 2] =
    [("deferred", "Deferred"), ("under_lock", "UnderLock")];

/// `wq::Builder::max_workers_per_pool`'s limit (the runtime's
/// `pool::MAX_WORKERS`: half of a pool's 16-bit slot field).
const MAX_WORKERS: u64 = 32_767;
/// `wq::MAX_CPUS`.
const MAX_CPUS: u64 = 8192;

/// A valid `topology` value, shown in the errors.
pub(crate) const TOPOLOGY_EXAMPLE: &str = "pack:2 numa:2 l3:2 core:4 pu:2";

/// A parsed option value and the span of the token it came from.
#[derive(Clone, Debug)]
pub(crate) struct Setting<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

/// The options of one attribute. `None` means "not given": the runtime's
/// default applies.
#[derive(Clone, Default)]
pub(crate) struct Options {
    /// The `wq::Scope` variant, e.g. `"CacheShard"`.
    pub(crate) scope: Option<Setting<&'static str>>,
    /// The `wq::WakeMode` variant, e.g. `"UnderLock"`.
    pub(crate) wake: Option<Setting<&'static str>>,
    /// The hwloc synthetic string, already syntax-checked.
    pub(crate) topology: Option<LitStr>,
    /// The per-pool worker cap, at least 1.
    pub(crate) workers: Option<Setting<u64>>,
    /// The path of the `wq` crate, when renamed.
    pub(crate) krate: Option<Path>,
}

/// Errors gathered while parsing and checking, reported all together.
#[derive(Debug, Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    /// Adds one error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// The errors combined into one, or `None` if there were none.
    pub(crate) fn into_error(self) -> Option<syn::Error> {
        self.0
    }
}

/// Parses the attribute's arguments (the tokens between its parentheses).
///
/// Every mistake is pushed to `errors`; what parsed is returned.
pub(crate) fn parse(args: TokenStream, errors: &mut Errors) -> Options {
    let mut options = Options::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
        Ok(metas) => metas,
        Err(e) => {
            errors.push(syn::Error::new(
                e.span(),
                format!("{e}; options are written `name = value`, separated by commas"),
            ));
            return options;
        }
    };
    let mut seen: Vec<String> = Vec::new();
    for meta in metas {
        let path = meta.path();
        let Some(ident) = path.get_ident() else {
            errors.push(unknown_option(
                path.span(),
                &quote::quote!(#path).to_string(),
            ));
            continue;
        };
        let name = ident.to_string();
        if !OPTION_NAMES.contains(&name.as_str()) {
            errors.push(unknown_option(ident.span(), &name));
            continue;
        }
        if seen.contains(&name) {
            errors.push(syn::Error::new(
                ident.span(),
                format!("option `{name}` is given more than once; keep one"),
            ));
            continue;
        }
        seen.push(name.clone());
        let value = match &meta {
            Meta::NameValue(nv) => &nv.value,
            Meta::Path(_) | Meta::List(_) => {
                errors.push(syn::Error::new_spanned(
                    &meta,
                    format!(
                        "option `{name}` needs a value: `{name} = {}`",
                        example(&name)
                    ),
                ));
                continue;
            }
        };
        let parsed = match name.as_str() {
            "scope" => parse_choice(value, "scope", &SCOPES).map(|v| options.scope = Some(v)),
            "wake" => parse_choice(value, "wake", &WAKE_MODES).map(|v| options.wake = Some(v)),
            "topology" => parse_topology(value).map(|v| options.topology = Some(v)),
            "workers" => parse_workers(value).map(|v| options.workers = Some(v)),
            "crate" => parse_crate(value).map(|v| options.krate = Some(v)),
            _ => unreachable!("`{name}` is in OPTION_NAMES"),
        };
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    options
}

/// The error for an option name that is not one of [`OPTION_NAMES`].
fn unknown_option(span: Span, name: &str) -> syn::Error {
    let valid: Vec<String> = OPTION_NAMES.iter().map(|n| format!("`{n}`")).collect();
    // tokio's options, as a tokio user writes them.
    let tokio = match name {
        "flavor" => " (tokio's `flavor` has no equivalent: wq's pools are always multi-threaded)",
        "worker_threads" => " (tokio's `worker_threads` is `workers` here, per pool)",
        "start_paused" => " (wq has no paused time)",
        _ => "",
    };
    syn::Error::new(
        span,
        format!(
            "unknown option `{name}`{tokio}; the valid options are {}",
            valid.join(", ")
        ),
    )
}

/// A valid value for the option `name`, for the error messages.
fn example(name: &str) -> String {
    match name {
        "scope" => "\"cache\"".to_owned(),
        "wake" => "\"deferred\"".to_owned(),
        "topology" => format!("{TOPOLOGY_EXAMPLE:?}"),
        "workers" => "4".to_owned(),
        _ => "\"::wq\"".to_owned(),
    }
}

/// The literal behind `expr`, seeing through the invisible groups that a
/// `macro_rules!` metavariable leaves.
fn literal(expr: &Expr) -> Option<&Lit> {
    match expr {
        Expr::Lit(lit) if lit.attrs.is_empty() => Some(&lit.lit),
        Expr::Group(group) if group.attrs.is_empty() => literal(&group.expr),
        Expr::Paren(paren) if paren.attrs.is_empty() => literal(&paren.expr),
        _ => None,
    }
}

/// Refuses a string literal with a suffix (`"cache"bogus`): the compiler
/// checks no suffix inside an attribute's arguments, and one read as the
/// bare string would let a typo through.
fn unsuffixed(lit: &LitStr, name: &str) -> syn::Result<()> {
    if lit.suffix().is_empty() {
        return Ok(());
    }
    Err(syn::Error::new(
        lit.span(),
        format!(
            "option `{name}` takes a plain string: {:?} has the suffix `{}` after its closing quote; remove it",
            lit.value(),
            lit.suffix()
        ),
    ))
}

/// "\"a\", \"b\" or \"c\"".
fn quoted_list(choices: &[(&str, &str)]) -> String {
    let quoted: Vec<String> = choices.iter().map(|(s, _)| format!("\"{s}\"")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Parses a string naming one of `choices`, returning its variant.
fn parse_choice(
    value: &Expr,
    name: &str,
    choices: &[(&'static str, &'static str)],
) -> syn::Result<Setting<&'static str>> {
    let Some(Lit::Str(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            format!(
                "option `{name}` takes a string: one of {}",
                quoted_list(choices)
            ),
        ));
    };
    unsuffixed(lit, name)?;
    let text = lit.value();
    match choices.iter().find(|(s, _)| *s == text) {
        Some((_, variant)) => Ok(Setting {
            value: variant,
            span: lit.span(),
        }),
        None => Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid `{name}` value {text:?}; the valid values are {}",
                quoted_list(choices)
            ),
        )),
    }
}

/// Parses `workers = N`, N a positive integer literal.
fn parse_workers(value: &Expr) -> syn::Result<Setting<u64>> {
    // syn reads `-1` as one literal: refuse it here, with `"4"` and `n`.
    let Some(Lit::Int(lit)) = literal(value).filter(|lit| !lit_is_negative(lit)) else {
        return Err(syn::Error::new_spanned(
            value,
            "option `workers` takes a positive integer literal, like `workers = 4`",
        ));
    };
    let n: u64 = lit.base10_parse().map_err(|_| {
        syn::Error::new(
            lit.span(),
            format!("option `workers` is too large: a pool holds at most {MAX_WORKERS} workers"),
        )
    })?;
    // The literal's suffix, which the compiler does not check inside an
    // attribute: an integer type the value fits (`16usize`), or none.
    let suffix_max: Option<u128> = match lit.suffix() {
        "" | "u64" | "usize" | "u128" | "i128" => None,
        "u8" => Some(u8::MAX.into()),
        "u16" => Some(u16::MAX.into()),
        "u32" => Some(u32::MAX.into()),
        "i8" => Some(i8::MAX as u128),
        "i16" => Some(i16::MAX as u128),
        "i32" => Some(i32::MAX as u128),
        "i64" | "isize" => Some(i64::MAX as u128),
        other => {
            return Err(syn::Error::new(
                lit.span(),
                format!(
                    "option `workers` has the suffix `{other}`, which is no integer type: \
                     write a plain number, like `workers = 4`"
                ),
            ));
        }
    };
    if suffix_max.is_some_and(|max| u128::from(n) > max) {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "option `workers` is {n}, which does not fit its suffix `{}`",
                lit.suffix()
            ),
        ));
    }
    if n == 0 {
        return Err(syn::Error::new(
            lit.span(),
            "option `workers` must be at least 1: it caps the workers of each pool; \
             leave it out for the default",
        ));
    }
    if n > MAX_WORKERS {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "option `workers` is {n}: a pool holds at most {MAX_WORKERS} workers \
                 (the limit of `Builder::max_workers_per_pool`); pass a smaller number"
            ),
        ));
    }
    Ok(Setting {
        value: n,
        span: lit.span(),
    })
}

/// Whether `lit` is a negative number (syn folds `-1` into one literal).
fn lit_is_negative(lit: &Lit) -> bool {
    match lit {
        Lit::Int(int) => int.base10_digits().starts_with('-'),
        Lit::Float(float) => float.base10_digits().starts_with('-'),
        _ => false,
    }
}

/// Parses `topology = "..."` and checks its syntax.
fn parse_topology(value: &Expr) -> syn::Result<LitStr> {
    let Some(Lit::Str(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            format!("option `topology` takes an hwloc synthetic string, like {TOPOLOGY_EXAMPLE:?}"),
        ));
    };
    unsuffixed(lit, "topology")?;
    check_topology(&lit.value()).map_err(|msg| syn::Error::new(lit.span(), msg))?;
    Ok(lit.clone())
}

/// A light syntax check of an hwloc synthetic topology string, as the
/// runtime reads it: whitespace-separated levels `name:N`, `name` an
/// identifier and `N` a positive integer (read as the runtime reads it:
/// `0x` hex, a leading 0 octal), the last one also a bare `N` (hwloc's PU
/// level; hwloc reads a bare count at any level and types it itself, the
/// runtime without hwloc only as the last: the macro takes the forms both
/// read); hwloc's attribute lists in parentheses (the root's first, a
/// level's after its count, spaces allowed) and memory children in
/// brackets are skipped, and must balance; at most [`MAX_CPUS`] CPUs in
/// all. The runtime's `Topology::synthetic` does the full check when the
/// program starts.
pub(crate) fn check_topology(text: &str) -> Result<(), String> {
    let hint =
        format!("write levels as `name:N` with N a positive integer, like {TOPOLOGY_EXAMPLE:?}");
    if text.trim().is_empty() {
        return Err(format!("option `topology` is empty; {hint}"));
    }
    let Some(plain) = without_groups(text) else {
        return Err(format!(
            "option `topology` has unbalanced parentheses or brackets; {hint}"
        ));
    };
    let items: Vec<&str> = plain.split_whitespace().collect();
    if items.is_empty() {
        return Err(format!("option `topology` names no level; {hint}"));
    }
    // `None`: more than a 64-bit number counts (a count that overflowed,
    // `u64::MAX` from `strtoul`, or a product that did).
    let mut cpus: Option<u64> = Some(1);
    for (i, item) in items.iter().enumerate() {
        let count = match item.split_once(':') {
            Some((name, count)) => {
                let mut chars = name.chars();
                let named = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
                named.then(|| strtoul(count)).flatten()
            }
            // A last level with no type: hwloc's PU level ("core:4 2"),
            // which hwloc reads only if it starts with a digit (no `+`).
            None if i > 0
                && i + 1 == items.len()
                && item.starts_with(|c: char| c.is_ascii_digit()) =>
            {
                strtoul(item)
            }
            None => None,
        }
        .filter(|&n| n > 0);
        let Some(count) = count else {
            // The level without its attributes (they are not the fault).
            let octal = item
                .split_once(':')
                .map(|(_, n)| n)
                .filter(|n| {
                    n.len() > 1 && n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit())
                })
                .and_then(|n| n.trim_start_matches('0').parse::<u64>().ok())
                .map(|n| format!(" (a leading 0 means octal, as hwloc reads counts: write {n})"))
                .unwrap_or_default();
            return Err(format!("invalid `topology` level `{item}`{octal}; {hint}"));
        };
        cpus = cpus
            .and_then(|c| c.checked_mul(count))
            .filter(|_| count != u64::MAX);
    }
    if cpus.is_none_or(|n| n > MAX_CPUS) {
        let described = cpus.map_or_else(
            || "more CPUs than a 64-bit number counts".to_string(),
            |n| format!("{n} CPUs"),
        );
        return Err(format!(
            "option `topology` describes {described}; wq supports at most {MAX_CPUS} \
             (`wq::MAX_CPUS`): the counts multiply, e.g. \"pack:2 core:64 pu:2\" is 256"
        ));
    }
    Ok(())
}

/// `text` with its parenthesized and bracketed groups (nested included)
/// blanked out; `None` if they do not balance.
fn without_groups(text: &str) -> Option<String> {
    let mut plain = String::with_capacity(text.len());
    let mut open: Vec<char> = Vec::new();
    for c in text.chars() {
        match c {
            '(' | '[' => {
                open.push(c);
                plain.push(' ');
            }
            ')' | ']' => {
                let want = if c == ')' { '(' } else { '[' };
                if open.pop() != Some(want) {
                    return None;
                }
                plain.push(' ');
            }
            c if open.is_empty() => plain.push(c),
            _ => {}
        }
    }
    open.is_empty().then_some(plain)
}

/// A count as the runtime reads it (hwloc's `strtoul(count, NULL, 0)`):
/// an optional `+`, then decimal, `0x` hex, or octal after a leading 0
/// ("core:08" is no count, "core:010" is 8). A count too big for 64 bits
/// is `u64::MAX`: too many CPUs, which the caller says, not a malformed
/// level.
fn strtoul(s: &str) -> Option<u64> {
    let s = s.strip_prefix('+').unwrap_or(s);
    let (digits, radix) = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (hex, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    Some(u64::from_str_radix(digits, radix).unwrap_or(u64::MAX))
}

/// Parses `crate = "path"`.
fn parse_crate(value: &Expr) -> syn::Result<Path> {
    let err = || {
        syn::Error::new_spanned(
            value,
            "option `crate` takes the path of the wq crate as a string, like `crate = \"::wq\"`",
        )
    };
    let Some(Lit::Str(lit)) = literal(value) else {
        return Err(err());
    };
    unsuffixed(lit, "crate")?;
    lit.parse::<Path>().map_err(|_| err())
}

#[cfg(test)]
mod tests {
    #[test]
    fn topology_strings_with_hwloc_attributes_pass_and_too_many_cpus_fail() {
        assert!(super::check_topology("core:2 pu:2(indexes=0,2,1,3)").is_ok());
        assert!(super::check_topology("pack:2 core:2048 pu:2").is_ok());
        let err = super::check_topology("pack:2 core:2048 pu:4").unwrap_err();
        assert!(err.contains("16384 CPUs"), "{err}");
        assert!(super::check_topology("core:2(").is_err());
        for bad in [
            "core:2 (a",
            "core:2]",
            "pack:2(x] core:2",
            "()",
            "4",
            "core:4 2 pu:2",
        ] {
            assert!(super::check_topology(bad).is_err(), "{bad:?}");
        }
        let err = super::check_topology("core:2(a").unwrap_err();
        assert!(err.contains("unbalanced"), "{err}");
        // "08" is not octal: the error says why a count that looks fine is
        // refused, and what to write.
        let err = super::check_topology("pack:2 core:08").unwrap_err();
        assert!(
            err.contains("leading 0 means octal") && err.contains("write 8"),
            "{err}"
        );
    }

    use super::*;
    use quote::quote;

    /// Parses `args`, returning the options and every error message.
    fn run(args: TokenStream) -> (Options, Vec<String>) {
        let mut errors = Errors::default();
        let options = parse(args, &mut errors);
        let messages = errors
            .into_error()
            .map(|e| e.into_iter().map(|e| e.to_string()).collect())
            .unwrap_or_default();
        (options, messages)
    }

    /// Parses `args`, which must have exactly one error, and returns it.
    fn one_error(args: TokenStream) -> String {
        let (_, mut messages) = run(args);
        assert_eq!(messages.len(), 1, "{messages:?}");
        messages.remove(0)
    }

    /// A suffix after a string's closing quote is refused, naming it (it
    /// was read as the bare string: `scope = "cache"bogus` ran as `cache`).
    #[test]
    fn a_suffixed_string_is_refused() {
        for (args, name, suffix) in [
            (r#"scope = "cache"bogus"#, "scope", "bogus"),
            (r#"wake = "deferred"z"#, "wake", "z"),
            (r#"topology = "core:2 pu:2"xyz"#, "topology", "xyz"),
            (r#"crate = "::wq"q"#, "crate", "q"),
        ] {
            let msg = one_error(args.parse().unwrap());
            assert!(
                msg.contains(&format!("option `{name}` takes a plain string"))
                    && msg.contains(&format!("the suffix `{suffix}`")),
                "{args}: {msg}"
            );
        }
    }

    #[test]
    fn no_options_means_defaults() {
        let (options, errors) = run(TokenStream::new());
        assert!(errors.is_empty());
        assert!(options.scope.is_none());
        assert!(options.wake.is_none());
        assert!(options.topology.is_none());
        assert!(options.workers.is_none());
        assert!(options.krate.is_none());
    }

    #[test]
    fn every_option_together() {
        let (options, errors) = run(quote! {
            scope = "cache_shard", wake = "under_lock", topology = "pack:2 core:4 pu:2",
            workers = 4, crate = "::my_wq",
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(options.scope.unwrap().value, "CacheShard");
        assert_eq!(options.wake.unwrap().value, "UnderLock");
        assert_eq!(options.topology.unwrap().value(), "pack:2 core:4 pu:2");
        assert_eq!(options.workers.unwrap().value, 4);
        let krate = options.krate.unwrap();
        assert_eq!(quote!(#krate).to_string(), ":: my_wq");
    }

    #[test]
    fn every_scope_and_wake_mode_parses() {
        for (text, variant) in SCOPES {
            let (options, errors) = run(quote!(scope = #text));
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(options.scope.unwrap().value, variant);
        }
        for (text, variant) in WAKE_MODES {
            let (options, errors) = run(quote!(wake = #text));
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(options.wake.unwrap().value, variant);
        }
    }

    #[test]
    fn unknown_option_lists_the_valid_ones() {
        let msg = one_error(quote!(bogus = 1));
        assert_eq!(
            msg,
            "unknown option `bogus`; the valid options are `scope`, `wake`, `topology`, \
             `workers`, `crate`"
        );
        // A tokio user's options say what they are here.
        let msg = one_error(quote!(flavor = "multi_thread"));
        assert!(msg.contains("tokio's `flavor` has no equivalent"), "{msg}");
        let msg = one_error(quote!(worker_threads = 4));
        assert!(msg.contains("is `workers` here, per pool"), "{msg}");
        assert!(one_error(quote!(a::b = 1)).starts_with("unknown option `a :: b`"));
    }

    #[test]
    fn repeated_option_is_an_error_and_the_first_value_is_kept() {
        let (options, errors) = run(quote!(scope = "cpu", scope = "numa"));
        assert_eq!(errors, ["option `scope` is given more than once; keep one"]);
        assert_eq!(options.scope.unwrap().value, "Cpu");
    }

    #[test]
    fn bad_scope() {
        assert_eq!(
            one_error(quote!(scope = "l3")),
            "invalid `scope` value \"l3\"; the valid values are \"cpu\", \"smt\", \
             \"cache_shard\", \"cache\", \"numa\" or \"system\""
        );
        assert!(one_error(quote!(scope = Cache)).starts_with("option `scope` takes a string"));
        assert!(one_error(quote!(scope = 3)).starts_with("option `scope` takes a string"));
    }

    #[test]
    fn bad_wake() {
        assert_eq!(
            one_error(quote!(wake = "eager")),
            "invalid `wake` value \"eager\"; the valid values are \"deferred\" or \"under_lock\""
        );
        assert!(one_error(quote!(wake = true)).starts_with("option `wake` takes a string"));
    }

    #[test]
    fn bad_workers() {
        assert!(one_error(quote!(workers = 0)).starts_with("option `workers` must be at least 1"));
        let not_int = "option `workers` takes a positive integer literal, like `workers = 4`";
        assert_eq!(one_error(quote!(workers = "4")), not_int);
        assert_eq!(one_error(quote!(workers = -1)), not_int);
        assert_eq!(one_error(quote!(workers = n)), not_int);
        assert_eq!(one_error(quote!(workers = 1.5)), not_int);
        assert!(
            one_error(quote!(workers = 99999999999999999999999))
                .starts_with("option `workers` is too large"),
        );
    }

    #[test]
    fn workers_accepts_suffixes_and_parentheses() {
        let (options, errors) = run(quote!(workers = (16usize)));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(options.workers.unwrap().value, 16);
        let (options, errors) = run(quote!(workers = 200u8));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(options.workers.unwrap().value, 200);
    }

    /// The compiler does not check a literal's suffix inside an attribute:
    /// `4abc` and `300u8` were read as 4 and 300.
    #[test]
    fn workers_refuses_a_suffix_that_is_no_type_or_does_not_fit() {
        assert!(
            one_error(quote!(workers = 4abc))
                .starts_with("option `workers` has the suffix `abc`, which is no integer type")
        );
        assert_eq!(
            one_error(quote!(workers = 300u8)),
            "option `workers` is 300, which does not fit its suffix `u8`"
        );
    }

    #[test]
    fn topology_syntax() {
        for good in [
            TOPOLOGY_EXAMPLE,
            "pu:1",
            "  core:4\tpu:2 ",
            "NUMANode:2 L3Cache:1 Core:8",
            // hwloc's forms the runtime reads: a bare last count, root and
            // level attributes (with spaces), memory children.
            "core:4 2",
            "(memory=1GB) core:4 pu:2",
            "l3:2(size=1MB indexes=0,1) pu:2",
            "pack:2[numa] core:2",
        ] {
            assert_eq!(check_topology(good), Ok(()), "{good:?}");
        }
        for bad in [
            "pack:0", "core4", "core:", ":4", "core:-1", "core:4x", "4:4", "c-re:2", "core:08",
        ] {
            let msg = check_topology(bad).unwrap_err();
            assert!(msg.contains(&format!("level `{bad}`")), "{msg}");
            assert!(msg.contains(TOPOLOGY_EXAMPLE), "{msg}");
        }
        assert!(
            check_topology("")
                .unwrap_err()
                .starts_with("option `topology` is empty")
        );
        assert!(
            check_topology("  ")
                .unwrap_err()
                .starts_with("option `topology` is empty")
        );
        assert!(
            one_error(quote!(topology = "core:4 pu")).starts_with("invalid `topology` level `pu`")
        );
        // Counts as the runtime reads them (C's strtoul): "08" is no
        // octal number (it compiled, then panicked at start); "020000" is
        // 8,192 CPUs, not 20,000 (it was refused).
        assert_eq!(check_topology("core:020000"), Ok(()));
        assert_eq!(check_topology("core:0x10 pu:2"), Ok(()));
        // strtoul's leading `+`, as `Topology::synthetic` reads it.
        assert_eq!(check_topology("core:+4"), Ok(()));
        // A count past 64 bits is too many CPUs, not a malformed level
        // (it said to write a positive integer, which it was).
        for huge in [
            "core:99999999999999999999",
            "pack:4294967296 core:4294967296 pu:2",
        ] {
            let msg = check_topology(huge).unwrap_err();
            assert!(
                msg.contains(
                    "describes more CPUs than a 64-bit number counts; wq supports at most"
                ),
                "{msg}"
            );
        }
        let msg = check_topology("pack:64 core:64 pu:4").unwrap_err();
        assert!(
            msg.contains("describes 16384 CPUs; wq supports at most"),
            "{msg}"
        );
        // hwloc reads a bare last count only if it starts with a digit.
        assert!(
            check_topology("core:4 +2")
                .unwrap_err()
                .starts_with("invalid `topology` level `+2`")
        );
        assert!(one_error(quote!(topology = 4)).starts_with("option `topology` takes an hwloc"));
    }

    #[test]
    fn bad_crate() {
        let msg =
            "option `crate` takes the path of the wq crate as a string, like `crate = \"::wq\"`";
        assert_eq!(one_error(quote!(crate = "not a path")), msg);
        assert_eq!(one_error(quote!(crate = wq)), msg);
    }

    #[test]
    fn option_without_value() {
        assert_eq!(
            one_error(quote!(scope)),
            "option `scope` needs a value: `scope = \"cache\"`"
        );
        assert_eq!(
            one_error(quote!(workers(4))),
            "option `workers` needs a value: `workers = 4`"
        );
    }

    #[test]
    fn every_mistake_is_reported_and_good_options_are_kept() {
        let (options, errors) = run(quote!(
            scope = "l3",
            wake = "deferred",
            workers = 0,
            foo = 1
        ));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(options.wake.unwrap().value, "Deferred");
        assert!(options.scope.is_none() && options.workers.is_none());
    }

    #[test]
    fn malformed_arguments() {
        let msg = one_error(quote!(scope: "cache"));
        assert!(
            msg.ends_with("options are written `name = value`, separated by commas"),
            "{msg}"
        );
    }
}
