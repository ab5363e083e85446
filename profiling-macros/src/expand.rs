//! Code generation of `#[profiled]`: validating the item and rewriting its body.
//!
//! The signature, attributes and visibility are re-emitted token for token; only the
//! statements of the body change. Three shapes are recognised:
//!
//! * a plain (sync) function: a guard is entered first and records the call on drop;
//! * an `async fn`: the body becomes an `async move` block wrapped in `Instrumented`,
//!   so no guard ever lives across an `.await`;
//! * the `#[async_trait]` shape, a non-async fn whose body ends in
//!   `Box::pin(async move { .. })`: the inner async block is wrapped in place.
//!
//! (Over 500 lines only with its unit tests: the code is the first 393 lines, the tests the
//! other 217, kept beside it as the house does for pure functions.)

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{
    AttrStyle, Attribute, Expr, ExprCall, Item, ItemFn, LitStr, Path, ReturnType, Signature, Stmt, Token, Visibility,
};

use crate::attr::{Args, SpanLevel};

/// Entry point: parse `args` and `item`, then rewrite the item when `enabled`.
///
/// With `enabled == false` the arguments and the item are still validated, so a program
/// that compiles without the `enabled` feature also compiles with it, and the item is
/// returned unchanged.
pub(crate) fn profiled(args: TokenStream, item: TokenStream, enabled: bool) -> TokenStream {
    let args = match syn::parse2::<Args>(args) {
        Ok(args) => args,
        Err(error) => return error_and_item(error, item),
    };
    let func = match parse_function(item.clone()) {
        Ok(func) => func,
        Err(error) => return error_and_item(error, item),
    };
    if !enabled {
        return item;
    }
    expand(&args, func)
}

/// The error, followed by the item untouched so that it does not also vanish (which
/// would add "cannot find function" errors at every call site).
fn error_and_item(error: syn::Error, item: TokenStream) -> TokenStream {
    let mut tokens = error.into_compile_error();
    tokens.extend(item);
    tokens
}

/// Parses the item as a function with a body, or explains why it is not one.
fn parse_function(item: TokenStream) -> syn::Result<ItemFn> {
    let fn_error = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(func) => {
            if let Some(constness) = func.sig.constness {
                return Err(syn::Error::new(
                    constness.span,
                    "#[profiled] cannot be applied to a `const fn`: \
                     a call evaluated at compile time cannot be recorded",
                ));
            }
            return Ok(func);
        }
        Err(error) => error,
    };
    // A trait method without a default body, or a function of an `extern` block.
    if let Ok(semi) = bodiless_function.parse2(item.clone()) {
        return Err(syn::Error::new(
            semi.span,
            "#[profiled] needs a function body: put it on the implementations of this method",
        ));
    }
    if let Ok(other) = syn::parse2::<Item>(item) {
        return Err(syn::Error::new(
            item_keyword_span(&other),
            "#[profiled] can only be applied to functions and methods",
        ));
    }
    Err(fn_error)
}

/// Parses `attrs vis fn sig;` and returns the `;`.
fn bodiless_function(input: ParseStream<'_>) -> syn::Result<Token![;]> {
    input.call(Attribute::parse_outer)?;
    input.parse::<Visibility>()?;
    input.parse::<Signature>()?;
    input.parse()
}

/// The token naming what the item is (`struct`, `impl`, `mod`, ...), for errors.
fn item_keyword_span(item: &Item) -> Span {
    match item {
        Item::Const(i) => i.const_token.span,
        Item::Enum(i) => i.enum_token.span,
        Item::ExternCrate(i) => i.extern_token.span,
        Item::ForeignMod(i) => i.abi.extern_token.span,
        Item::Impl(i) => i.impl_token.span,
        Item::Macro(i) => i.mac.path.span(),
        Item::Mod(i) => i.mod_token.span,
        Item::Static(i) => i.static_token.span,
        Item::Struct(i) => i.struct_token.span,
        Item::Trait(i) => i.trait_token.span,
        Item::TraitAlias(i) => i.trait_token.span,
        Item::Type(i) => i.type_token.span,
        Item::Union(i) => i.union_token.span,
        Item::Use(i) => i.use_token.span,
        other => other.span(),
    }
}

/// Everything the generated statements need, computed once per function.
struct Context<'a> {
    /// `#crate_path::__private`.
    private: TokenStream,
    args: &'a Args,
    sig: &'a Signature,
    /// Whether `Self` may be named in the body: the function has a receiver or its
    /// signature mentions `Self`. Otherwise it is treated as a free function.
    in_impl: bool,
}

impl Context<'_> {
    /// An expression of type `&'static Callsite`, declaring the static in its own block
    /// so that it cannot clash with anything in the user's body.
    fn callsite(&self, kind: &str) -> TokenStream {
        let private = &self.private;
        let kind = syn::Ident::new(kind, Span::call_site());
        let name = match &self.args.name {
            Some(name) => quote!(::core::option::Option::Some(#name)),
            None => quote!(::core::option::Option::None),
        };
        let fn_name = self.fn_name();
        // Spanned on the function name, so that `line!()` is the line of the function.
        let location = quote_spanned! {self.sig.ident.span()=>
            ::core::module_path!(), ::core::file!(), ::core::line!()
        };
        quote! {
            {
                static __PROFILED_CALLSITE: #private::Callsite = #private::Callsite::new(
                    #name,
                    #fn_name,
                    #location,
                    #private::CallsiteKind::#kind,
                );
                &__PROFILED_CALLSITE
            }
        }
    }

    fn fn_name(&self) -> LitStr {
        LitStr::new(&self.sig.ident.unraw().to_string(), self.sig.ident.span())
    }

    /// `, ::core::any::type_name::<Self>` for methods, nothing for free functions.
    fn self_type_arg(&self) -> TokenStream {
        if self.in_impl {
            quote!(, ::core::any::type_name::<Self>)
        } else {
            TokenStream::new()
        }
    }

    /// `let __profiled_span = tracing::span!(..);` when the `span` option is given.
    fn span_stmt(&self) -> Option<TokenStream> {
        let SpanLevel { level, keyword } = self.args.span?;
        let private = &self.private;
        let level = syn::Ident::new(level.const_name(), keyword);
        let name = match &self.args.name {
            Some(name) => name.clone(),
            None => self.fn_name(),
        };
        let span = span_local();
        Some(quote! {
            let #span = #private::tracing::span!(
                target: ::core::module_path!(),
                #private::tracing::Level::#level,
                #name,
                profiled = true
            );
        })
    }

    /// Wraps a future expression in `Instrumented` (and the tracing span, if any).
    fn instrument_future(&self, future: TokenStream) -> TokenStream {
        let private = &self.private;
        let future = if self.args.span.is_some() {
            let span = span_local();
            quote!(#private::tracing::Instrument::instrument(#future, #span))
        } else {
            future
        };
        let callsite = self.callsite("Async");
        let self_type = self.self_type_arg();
        if self.in_impl {
            quote!(#private::Instrumented::new_in_impl(#callsite #self_type, #future))
        } else {
            quote!(#private::Instrumented::new(#callsite, #future))
        }
    }
}

/// Locals are `__profiled_*` and mixed-site: the user's code can neither see nor shadow them.
fn local(name: &str) -> syn::Ident {
    syn::Ident::new(name, Span::mixed_site())
}

fn span_local() -> syn::Ident {
    local("__profiled_span")
}

fn expand(args: &Args, func: ItemFn) -> TokenStream {
    let ItemFn { attrs, vis, sig, block } = func;
    let crate_path = args
        .crate_path
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::profiling_core));
    let cx = Context {
        private: private_path(&crate_path),
        args,
        in_impl: sig.receiver().is_some() || mentions_self(sig.to_token_stream()),
        sig: &sig,
    };

    let (outer, inner): (Vec<Attribute>, Vec<Attribute>) = attrs
        .into_iter()
        .partition(|attr| matches!(attr.style, AttrStyle::Outer));

    let body = if sig.asyncness.is_some() {
        expand_async_fn(&cx, &block.stmts)
    } else if let Some(shape) = async_trait_shape(&block.stmts) {
        expand_async_trait(&cx, shape)
    } else {
        expand_sync(&cx, &block.stmts)
    };

    let mut tokens = quote!(#(#outer)* #vis #sig);
    block.brace_token.surround(&mut tokens, |tokens| {
        tokens.extend(quote!(#(#inner)*));
        tokens.extend(body);
    });
    tokens
}

fn private_path(crate_path: &Path) -> TokenStream {
    quote!(#crate_path::__private)
}

fn expand_sync(cx: &Context<'_>, stmts: &[Stmt]) -> TokenStream {
    let private = &cx.private;
    let callsite = cx.callsite("Sync");
    let guard = local("__profiled_guard");
    let enter = if cx.in_impl {
        let self_type = cx.self_type_arg();
        quote!(#private::enter_in_impl(#callsite #self_type))
    } else {
        quote!(#private::enter(#callsite))
    };
    let span = cx.span_stmt().map(|span_stmt| {
        let span = span_local();
        let entered = local("__profiled_span_entered");
        quote! {
            #span_stmt
            let #entered = #span.enter();
        }
    });
    quote! {
        #span
        let #guard = #enter;
        #(#stmts)*
    }
}

fn expand_async_fn(cx: &Context<'_>, stmts: &[Stmt]) -> TokenStream {
    let fake_return_edge = fake_return_edge(&cx.sig.output);
    let future = quote! {
        async move {
            #fake_return_edge
            #(#stmts)*
        }
    };
    let span = cx.span_stmt();
    let instrumented = cx.instrument_future(future);
    quote! {
        #span
        #instrumented.await
    }
}

/// Pins the output type of the `async move` block to the declared return type, so that
/// `?`, `.into()` and friends infer as they did in the original body (tracing's "fake
/// return edge"). Skipped when the type cannot be written in a `let` (`impl Trait`).
fn fake_return_edge(output: &ReturnType) -> Option<TokenStream> {
    let (ty, span) = match output {
        ReturnType::Default => (quote!(()), Span::call_site()),
        ReturnType::Type(_, ty) => {
            if mentions_ident(ty.to_token_stream(), "impl") {
                return None;
            }
            (ty.to_token_stream(), ty.span())
        }
    };
    // Mixed-site hygiene, but located at the return type: "return type inferred to be
    // `T` here" then points at the signature.
    let value = syn::Ident::new("__profiled_fake_return", Span::mixed_site().located_at(span));
    Some(quote_spanned! {span=>
        #[allow(
            unknown_lints,
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::empty_loop,
            clippy::let_unit_value,
            clippy::let_with_type_underscore,
            clippy::needless_return,
            clippy::unreachable
        )]
        if false {
            let #value: #ty = loop {};
            return #value;
        }
    })
}

/// A body shaped like `#[async_trait]` output: its last statement is
/// `Box::pin(async { .. })` without a trailing semicolon.
struct AsyncTraitShape<'a> {
    /// The statements before the `Box::pin` call.
    init: &'a [Stmt],
    /// The `Box::pin` path, as written.
    box_pin: &'a Expr,
    /// The async block passed to it.
    future: &'a Expr,
}

fn async_trait_shape(stmts: &[Stmt]) -> Option<AsyncTraitShape<'_>> {
    let (Stmt::Expr(last, None), init) = stmts.split_last()? else {
        return None;
    };
    let Expr::Call(ExprCall { func, args, .. }) = ungroup(last) else {
        return None;
    };
    let Expr::Path(path) = ungroup(func) else {
        return None;
    };
    let mut segments = path.path.segments.iter().rev();
    let ends_in_box_pin = matches!(
        (segments.next(), segments.next()),
        (Some(pin), Some(boxed)) if pin.ident == "pin" && boxed.ident == "Box"
    );
    if !ends_in_box_pin || args.len() != 1 {
        return None;
    }
    let future = ungroup(args.first()?);
    matches!(future, Expr::Async(_)).then_some(AsyncTraitShape {
        init,
        box_pin: func,
        future,
    })
}

fn ungroup(mut expr: &Expr) -> &Expr {
    loop {
        match expr {
            Expr::Group(group) => expr = &group.expr,
            Expr::Paren(paren) => expr = &paren.expr,
            _ => return expr,
        }
    }
}

fn expand_async_trait(cx: &Context<'_>, shape: AsyncTraitShape<'_>) -> TokenStream {
    let AsyncTraitShape { init, box_pin, future } = shape;
    let instrumented = cx.instrument_future(future.to_token_stream());
    let span = cx.span_stmt();
    quote! {
        #(#init)*
        #span
        #box_pin(#instrumented)
    }
}

/// Whether `Self` appears anywhere in `tokens`.
fn mentions_self(tokens: TokenStream) -> bool {
    mentions_ident(tokens, "Self")
}

fn mentions_ident(tokens: TokenStream, name: &str) -> bool {
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(ident) => ident == name,
        TokenTree::Group(group) => mentions_ident(group.stream(), name),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(args: TokenStream, item: TokenStream) -> String {
        profiled(args, item, true).to_string()
    }

    #[test]
    fn disabled_returns_the_item_unchanged() {
        let item = quote! {
            /// Docs.
            #[inline]
            pub(crate) fn add<T: Into<u64>>(a: T, b: u64) -> u64 where T: Copy { a.into() + b }
        };
        let out = profiled(quote!(name = "x", span = "warn"), item.clone(), false);
        assert_eq!(out.to_string(), item.to_string());
    }

    #[test]
    fn disabled_still_validates() {
        let item = quote!(
            fn f() {}
        );
        let out = profiled(quote!(nmae = "x"), item.clone(), false).to_string();
        assert!(out.contains("compile_error"), "{out}");
        let out = profiled(
            quote!(),
            quote!(
                struct S;
            ),
            false,
        )
        .to_string();
        assert!(out.contains("can only be applied to functions"), "{out}");
    }

    #[test]
    fn sync_free_fn() {
        let out = expand_str(
            quote!(),
            quote!(
                pub fn f(x: u32) -> u32 {
                    let y = x;
                    y + 1
                }
            ),
        );
        assert!(out.starts_with("pub fn f (x : u32) -> u32 {"), "{out}");
        assert!(out.contains(":: profiling_core :: __private :: enter ("), "{out}");
        assert!(out.contains("CallsiteKind :: Sync"), "{out}");
        assert!(out.contains(":: core :: option :: Option :: None"), "{out}");
        assert!(out.ends_with("let y = x ; y + 1 }"), "{out}");
        assert!(!out.contains("Self"), "{out}");
    }

    #[test]
    fn receiver_or_self_in_signature_means_in_impl() {
        for item in [
            quote!(
                fn f(&self) {}
            ),
            quote!(
                fn f(self: Box<Self>) {}
            ),
            quote!(
                fn new() -> Self {
                    todo!()
                }
            ),
            quote!(
                fn f(x: Option<Self>) {}
            ),
        ] {
            let out = expand_str(quote!(), item);
            assert!(out.contains("enter_in_impl"), "{out}");
            assert!(out.contains("type_name :: < Self >"), "{out}");
        }
        let out = expand_str(
            quote!(),
            quote!(
                fn f(x: self::Foo) {}
            ),
        );
        assert!(!out.contains("enter_in_impl"), "{out}");
    }

    #[test]
    fn crate_path_and_name_are_used() {
        let out = expand_str(
            quote!(crate = my::core, name = "shown"),
            quote!(
                fn f() {}
            ),
        );
        assert!(out.contains("my :: core :: __private :: enter"), "{out}");
        assert!(out.contains("Some (\"shown\")"), "{out}");
        assert!(!out.contains("profiling_core"), "{out}");
    }

    #[test]
    fn async_fn_wraps_the_body_in_instrumented() {
        let out = expand_str(
            quote!(),
            quote!(
                async fn f() -> Result<u8, E> {
                    g()?;
                    Ok(1)
                }
            ),
        );
        assert!(out.contains("Instrumented :: new ("), "{out}");
        assert!(out.contains("CallsiteKind :: Async"), "{out}");
        assert!(out.contains("async move"), "{out}");
        assert!(out.contains(": Result < u8 , E > = loop { }"), "{out}");
        assert!(out.ends_with(". await }"), "{out}");
        assert!(!out.contains("enter"), "{out}");
    }

    #[test]
    fn async_fn_returning_impl_trait_has_no_fake_return_edge() {
        let out = expand_str(
            quote!(),
            quote!(
                async fn f() -> impl Display {
                    1
                }
            ),
        );
        assert!(!out.contains("loop"), "{out}");
    }

    #[test]
    fn async_trait_shape_is_instrumented_inside_box_pin() {
        let out = expand_str(
            quote!(),
            quote! {
                fn f<'a>(&'a self) -> Pin<Box<dyn Future<Output = u8> + Send + 'a>> {
                    Box::pin(async move { 1 })
                }
            },
        );
        assert!(
            out.contains("Box :: pin (:: profiling_core :: __private :: Instrumented :: new_in_impl ("),
            "{out}"
        );
        assert!(!out.contains("enter"), "{out}");
    }

    #[test]
    fn span_option() {
        let out = expand_str(
            quote!(span = "debug"),
            quote!(
                fn f() {}
            ),
        );
        assert!(out.contains("tracing :: span !"), "{out}");
        assert!(out.contains("Level :: DEBUG"), "{out}");
        assert!(out.contains("\"f\" , profiled = true"), "{out}");
        assert!(out.contains("__profiled_span . enter ()"), "{out}");
        let out = expand_str(
            quote!(span, name = "N"),
            quote!(
                async fn f() {}
            ),
        );
        assert!(out.contains("Instrument :: instrument ("), "{out}");
        assert!(out.contains("\"N\" , profiled = true"), "{out}");
    }

    #[test]
    fn raw_identifier_names_are_unraw() {
        let out = expand_str(
            quote!(),
            quote!(
                fn r#type() {}
            ),
        );
        assert!(out.contains("\"type\""), "{out}");
    }

    #[test]
    fn inner_attributes_stay_at_the_top_of_the_body() {
        let out = expand_str(
            quote!(),
            quote!(
                fn f() {
                    #![allow(unused)]
                    let x = 1;
                }
            ),
        );
        assert!(out.starts_with("fn f () { # ! [allow (unused)]"), "{out}");
    }

    #[test]
    fn item_errors() {
        let out = expand_str(
            quote!(),
            quote!(
                const fn f() {}
            ),
        );
        assert!(out.contains("cannot be applied to a `const fn`"), "{out}");
        let out = expand_str(
            quote!(),
            quote!(
                fn f(&self);
            ),
        );
        assert!(out.contains("needs a function body"), "{out}");
        let out = expand_str(quote!(), quote!(impl Foo {}));
        assert!(out.contains("can only be applied to functions"), "{out}");
    }
}
