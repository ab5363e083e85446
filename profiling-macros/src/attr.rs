//! Parsing and validation of the `#[profiled(...)]` arguments.
//!
//! Every error is a [`syn::Error`] spanned on the token that is wrong (the unknown
//! argument, the repeated keyword, the literal of the wrong type), never on the whole
//! attribute.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{LitStr, Path, Token};

mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(span);
}

/// The parsed arguments of one `#[profiled(...)]` attribute.
///
/// Not `Debug`: syn implements it only with its `extra-traits` feature.
#[derive(Default)]
pub(crate) struct Args {
    /// `name = "..."`: the display name, replacing `module::fn_name`.
    pub(crate) name: Option<LitStr>,
    /// `crate = path`: where `profiling_core` lives; `::profiling_core` when absent.
    pub(crate) crate_path: Option<Path>,
    /// `span` / `span = "level"`: also open a `tracing` span at this level.
    pub(crate) span: Option<SpanLevel>,
}

/// The level of the `tracing` span opened by the `span` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// The constant of `tracing::Level` this level names.
    pub(crate) fn const_name(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }

    fn from_str(s: &str) -> Option<Self> {
        let level = match s.to_ascii_lowercase().as_str() {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" => Level::Warn,
            "error" => Level::Error,
            _ => return None,
        };
        Some(level)
    }
}

/// The `span` option together with the span of its keyword, for generated code.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpanLevel {
    pub(crate) level: Level,
    pub(crate) keyword: Span,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::name) {
                let keyword: kw::name = input.parse()?;
                if args.name.is_some() {
                    return Err(duplicate(keyword.span, "name"));
                }
                let eq = parse_eq(input, keyword.span, "name = \"my_function\"")?;
                args.name = Some(parse_name(input, eq)?);
            } else if lookahead.peek(Token![crate]) {
                let keyword: Token![crate] = input.parse()?;
                if args.crate_path.is_some() {
                    return Err(duplicate(keyword.span, "crate"));
                }
                let eq = parse_eq(input, keyword.span, "crate = ::profiling_core")?;
                args.crate_path = Some(parse_crate_path(input, eq)?);
            } else if lookahead.peek(kw::span) {
                let keyword: kw::span = input.parse()?;
                if args.span.is_some() {
                    return Err(duplicate(keyword.span, "span"));
                }
                let level = if input.peek(Token![=]) {
                    let eq: Token![=] = input.parse()?;
                    parse_level(input, eq)?
                } else {
                    Level::Info
                };
                args.span = Some(SpanLevel {
                    level,
                    keyword: keyword.span,
                });
            } else {
                return Err(lookahead.error());
            }

            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

fn duplicate(span: Span, arg: &str) -> syn::Error {
    syn::Error::new(span, format!("duplicate `{arg}` argument"))
}

/// Parses the `=` after `keyword`. At the end of the arguments, the error points at
/// the keyword rather than at the whole attribute.
fn parse_eq(input: ParseStream<'_>, keyword: Span, example: &str) -> syn::Result<Token![=]> {
    if input.is_empty() {
        return Err(syn::Error::new(keyword, format!("expected a value, as in `{example}`")));
    }
    input.parse()
}

/// An error on the next token, or on `eq` when the arguments end right after it.
fn value_error(input: ParseStream<'_>, eq: Token![=], message: &str) -> syn::Error {
    if input.is_empty() {
        syn::Error::new(eq.span, message)
    } else {
        input.error(message)
    }
}

fn parse_name(input: ParseStream<'_>, eq: Token![=]) -> syn::Result<LitStr> {
    if !input.peek(LitStr) {
        return Err(value_error(
            input,
            eq,
            "expected a string literal, as in `name = \"my_function\"`",
        ));
    }
    let name: LitStr = input.parse()?;
    if name.value().trim().is_empty() {
        return Err(syn::Error::new(name.span(), "`name` must not be empty"));
    }
    Ok(name)
}

fn parse_crate_path(input: ParseStream<'_>, eq: Token![=]) -> syn::Result<Path> {
    if input.peek(LitStr) {
        return Err(input.error("expected a path, not a string literal, as in `crate = ::profiling_core`"));
    }
    let expected = "expected a path, as in `crate = ::profiling_core`";
    if input.is_empty() {
        return Err(value_error(input, eq, expected));
    }
    // Mod-style: a crate path has no generic arguments.
    Path::parse_mod_style(input).map_err(|_| input.error(expected))
}

fn parse_level(input: ParseStream<'_>, eq: Token![=]) -> syn::Result<Level> {
    if !input.peek(LitStr) {
        return Err(value_error(
            input,
            eq,
            "expected a level string: \"trace\", \"debug\", \"info\", \"warn\" or \"error\"",
        ));
    }
    let lit: LitStr = input.parse()?;
    Level::from_str(&lit.value()).ok_or_else(|| {
        syn::Error::new(
            lit.span(),
            format!(
                "unknown span level {:?}; expected \"trace\", \"debug\", \"info\", \"warn\" or \"error\"",
                lit.value()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: proc_macro2::TokenStream) -> syn::Result<Args> {
        syn::parse2(tokens)
    }

    fn error(tokens: proc_macro2::TokenStream) -> String {
        match parse(tokens.clone()) {
            Ok(_) => panic!("expected an error for `{tokens}`"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_arguments_are_all_defaults() {
        let args = parse(quote!()).unwrap();
        assert!(args.name.is_none());
        assert!(args.crate_path.is_none());
        assert!(args.span.is_none());
    }

    #[test]
    fn all_arguments_in_any_order_with_trailing_comma() {
        let args = parse(quote!(span = "debug", crate = ::my::core, name = "shown",)).unwrap();
        assert_eq!(args.name.unwrap().value(), "shown");
        let path = args.crate_path.unwrap();
        assert!(path.leading_colon.is_some());
        assert_eq!(path.segments.len(), 2);
        assert_eq!(args.span.unwrap().level, Level::Debug);
    }

    #[test]
    fn bare_span_is_info() {
        assert_eq!(parse(quote!(span)).unwrap().span.unwrap().level, Level::Info);
    }

    #[test]
    fn every_level_parses_case_insensitively() {
        for (text, level) in [
            ("trace", Level::Trace),
            ("DEBUG", Level::Debug),
            ("Info", Level::Info),
            ("warn", Level::Warn),
            ("error", Level::Error),
        ] {
            let args = parse(quote!(span = #text)).unwrap();
            assert_eq!(args.span.unwrap().level, level, "{text}");
        }
    }

    #[test]
    fn crate_can_be_a_relative_path() {
        let path = parse(quote!(crate = crate::vendored)).unwrap().crate_path.unwrap();
        assert_eq!(quote!(#path).to_string(), "crate :: vendored");
    }

    #[test]
    fn unknown_argument() {
        assert_eq!(
            error(quote!(level = "info")),
            "expected one of: `name`, `crate`, `span`"
        );
    }

    #[test]
    fn duplicates() {
        assert_eq!(error(quote!(name = "a", name = "b")), "duplicate `name` argument");
        assert_eq!(error(quote!(span, span = "warn")), "duplicate `span` argument");
        assert_eq!(error(quote!(crate = a, crate = b)), "duplicate `crate` argument");
    }

    #[test]
    fn wrong_value_types() {
        assert!(error(quote!(name = 5)).starts_with("expected a string literal"));
        assert!(error(quote!(name = some_ident)).starts_with("expected a string literal"));
        assert!(error(quote!(crate = "profiling_core")).starts_with("expected a path"));
        assert!(error(quote!(crate = 5)).starts_with("expected a path"));
        assert!(error(quote!(span = 3)).starts_with("expected a level string"));
        assert!(error(quote!(span = "loud")).starts_with("unknown span level \"loud\""));
        assert_eq!(error(quote!(name = "")), "`name` must not be empty");
    }

    #[test]
    fn missing_values() {
        assert_eq!(error(quote!(name)), "expected a value, as in `name = \"my_function\"`");
        assert_eq!(
            error(quote!(crate)),
            "expected a value, as in `crate = ::profiling_core`"
        );
        assert!(error(quote!(name =)).starts_with("expected a string literal"));
        assert!(error(quote!(crate =)).starts_with("expected a path"));
        assert!(error(quote!(span =)).starts_with("expected a level string"));
    }

    #[test]
    fn missing_separators() {
        assert_eq!(error(quote!(name "a")), "expected `=`");
        assert_eq!(error(quote!(span name = "a")), "expected `,`");
    }
}
