//! The `#[hub]` attribute of `hubhost-sdk`. Use it through `hubhost_sdk::hub`; the docs are there.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, ImplItem, ImplItemFn, ItemImpl, LitStr, Pat, ReturnType, Type,
    parse_macro_input,
};

/// Marks an `impl` block as a hub and exports it. See `hubhost_sdk::hub`.
#[proc_macro_attribute]
pub fn hub(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = TokenStream2::from(attr);
        return syn::Error::new(attr.span(), "#[hub] takes no arguments on the impl block")
            .to_compile_error()
            .into();
    }
    let mut block = parse_macro_input!(item as ItemImpl);
    match expand(&mut block) {
        Ok(tokens) => tokens.into(),
        Err(err) => {
            let err = err.to_compile_error();
            quote!(#block #err).into()
        }
    }
}

/// What kind of value a method returns, which decides how it becomes a completion.
enum Returns {
    Nothing,
    Result,
    Value,
    /// A `HubStream`, bare (`false`) or in a `Result` (`true`).
    Stream(bool),
}

struct Method {
    ident: syn::Ident,
    wire_name: String,
    takes_context: bool,
    /// The parameters after `ctx`, in order; `true` for the `Upload` one.
    args: Vec<(syn::Ident, Type, bool)>,
    returns: Returns,
    /// What the result (or each streamed item) is, for `describe`; `None` for nothing.
    described: Option<Type>,
    doc: String,
    span: Span,
}

fn expand(block: &mut ItemImpl) -> syn::Result<TokenStream2> {
    if let Some((_, path, _)) = &block.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "#[hub] goes on an inherent impl block (`impl MyHub { ... }`), not a trait impl",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new(
            block.generics.span(),
            "a hub type cannot be generic",
        ));
    }
    let self_ty = block.self_ty.clone();
    let mut methods = Vec::new();
    let mut on_connected = None;
    let mut on_disconnected = None;
    for item in &mut block.items {
        let ImplItem::Fn(func) = item else { continue };
        let name_override = take_name_attr(&mut func.attrs)?;
        let ident = func.sig.ident.clone();
        match ident.to_string().as_str() {
            "on_connected" => on_connected = Some(lifecycle(func, 1)?),
            "on_disconnected" => on_disconnected = Some(lifecycle(func, 2)?),
            _ => methods.push(method(func, name_override)?),
        }
    }
    check_unique(&methods)?;

    let arms = methods
        .iter()
        .filter(|m| !matches!(m.returns, Returns::Stream(_)) && !m.uploads())
        .map(dispatch_arm);
    let upload_arms = methods.iter().filter(|m| m.uploads()).map(dispatch_arm);
    let stream_arms = methods
        .iter()
        .filter(|m| matches!(m.returns, Returns::Stream(_)))
        .map(dispatch_arm);
    let descriptions = methods.iter().map(description);
    let on_connected = on_connected.map(|ident| {
        quote! {
            fn on_connected(ctx: &::hubhost_sdk::Context) -> ::hubhost_sdk::HubResult {
                #self_ty::#ident(ctx)
            }
        }
    });
    let on_disconnected = on_disconnected.map(|ident| {
        quote! {
            fn on_disconnected(
                ctx: &::hubhost_sdk::Context,
                error: ::core::option::Option<::std::string::String>,
            ) -> ::hubhost_sdk::HubResult {
                #self_ty::#ident(ctx, error)
            }
        }
    });

    Ok(quote! {
        #block

        impl ::hubhost_sdk::__private::Hub for #self_ty {
            fn invoke(
                __ctx: &::hubhost_sdk::Context,
                __method: &str,
                __args: &str,
            ) -> ::core::result::Result<
                ::core::option::Option<::std::string::String>,
                ::hubhost_sdk::HubError,
            > {
                let _ = &__ctx;
                #(#arms)*
                ::core::result::Result::Err(::hubhost_sdk::__private::method_not_found())
            }

            fn stream(
                __ctx: &::hubhost_sdk::Context,
                __method: &str,
                __args: &str,
                __cursor: ::core::option::Option<::std::string::String>,
            ) -> ::core::result::Result<
                ::hubhost_sdk::__private::StreamStep,
                ::hubhost_sdk::HubError,
            > {
                let _ = (&__ctx, &__cursor);
                #(#stream_arms)*
                ::core::result::Result::Err(::hubhost_sdk::__private::method_not_found())
            }

            fn upload(
                __ctx: &::hubhost_sdk::Context,
                __method: &str,
                __args: &str,
                __event: ::hubhost_sdk::__private::UploadEvent,
                __state: ::core::option::Option<::std::string::String>,
            ) -> ::core::result::Result<
                ::hubhost_sdk::__private::UploadStep,
                ::hubhost_sdk::HubError,
            > {
                let _ = (&__ctx, &__event, &__state);
                #(#upload_arms)*
                ::core::result::Result::Err(::hubhost_sdk::__private::method_not_found())
            }

            fn describe() -> ::std::vec::Vec<::hubhost_sdk::__private::MethodInfo> {
                #[allow(unused_imports)]
                use ::hubhost_sdk::__private::{AnySchema as _, KnownSchema as _};
                ::std::vec![#(#descriptions),*]
            }
            #on_connected
            #on_disconnected
        }

        ::hubhost_sdk::__export_hub!(#self_ty);
    })
}

/// Reads and removes `#[hub(name = "...")]` from a method.
fn take_name_attr(attrs: &mut Vec<Attribute>) -> syn::Result<Option<String>> {
    let mut name = None;
    let mut error = None;
    attrs.retain(|attr| {
        if !attr.path().is_ident("hub") {
            return true;
        }
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let value: LitStr = meta.value()?.parse()?;
                if value.value().is_empty() {
                    return Err(meta.error("a hub method name cannot be empty"));
                }
                name = Some(value.value());
                Ok(())
            } else {
                Err(meta.error("expected `#[hub(name = \"MethodName\")]`"))
            }
        });
        if let Err(e) = parsed {
            error = Some(e);
        }
        false
    });
    match error {
        Some(e) => Err(e),
        None => Ok(name),
    }
}

fn reject_self_and_generics(func: &ImplItemFn) -> syn::Result<()> {
    if let Some(FnArg::Receiver(recv)) = func.sig.inputs.first() {
        return Err(syn::Error::new(
            recv.span(),
            "hub methods take no `self`: hubs are transient, so there is no instance state \
             (take `ctx: &Context` for the caller's identity)",
        ));
    }
    if !func.sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            func.sig.generics.span(),
            "hub methods cannot be generic: their argument types decide how the client's JSON is decoded",
        ));
    }
    if let Some(asyncness) = func.sig.asyncness {
        return Err(syn::Error::new(
            asyncness.span(),
            "hub methods are synchronous: remove `async`",
        ));
    }
    Ok(())
}

fn is_context(ty: &Type) -> bool {
    let Type::Reference(reference) = ty else {
        return false;
    };
    matches!(&*reference.elem, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Context"))
}

fn lifecycle(func: &ImplItemFn, arity: usize) -> syn::Result<syn::Ident> {
    reject_self_and_generics(func)?;
    let expected = if arity == 1 {
        "`fn on_connected(ctx: &Context) -> HubResult`"
    } else {
        "`fn on_disconnected(ctx: &Context, error: Option<String>) -> HubResult`"
    };
    let ok = func.sig.inputs.len() == arity
        && matches!(func.sig.inputs.first(), Some(FnArg::Typed(t)) if is_context(&t.ty))
        && !matches!(func.sig.output, ReturnType::Default);
    if !ok {
        return Err(syn::Error::new(
            func.sig.span(),
            format!("a lifecycle hook must look like {expected}"),
        ));
    }
    Ok(func.sig.ident.clone())
}

fn method(func: &ImplItemFn, name_override: Option<String>) -> syn::Result<Method> {
    reject_self_and_generics(func)?;
    let mut takes_context = false;
    let mut args = Vec::new();
    for (index, input) in func.sig.inputs.iter().enumerate() {
        let FnArg::Typed(arg) = input else {
            continue;
        };
        if is_context(&arg.ty) {
            if index != 0 {
                return Err(syn::Error::new(
                    arg.ty.span(),
                    "`&Context` must be the first parameter",
                ));
            }
            takes_context = true;
            continue;
        }
        if let Type::Reference(r) = &*arg.ty {
            return Err(syn::Error::new(
                r.span(),
                "hub method arguments must be owned types decoded from JSON (`String`, not `&str`)",
            ));
        }
        let ident = match &*arg.pat {
            Pat::Ident(p) => p.ident.clone(),
            _ => format_ident!("arg{}", index),
        };
        let upload = named(&arg.ty, "Upload");
        if upload && args.iter().any(|(_, _, u)| *u) {
            return Err(syn::Error::new(
                arg.ty.span(),
                "a hub method takes at most one `Upload`",
            ));
        }
        args.push((ident, (*arg.ty).clone(), upload));
    }
    let (returns, described) = match &func.sig.output {
        ReturnType::Default => (Returns::Nothing, None),
        ReturnType::Type(_, ty) => match &**ty {
            Type::Tuple(t) if t.elems.is_empty() => (Returns::Nothing, None),
            ty if named(ty, "HubStream") => (Returns::Stream(false), first_argument(ty)),
            ty if named(ty, "Result") || named(ty, "HubResult") => match first_argument(ty) {
                Some(inner) if named(&inner, "HubStream") => {
                    (Returns::Stream(true), first_argument(&inner))
                }
                Some(Type::Tuple(t)) if t.elems.is_empty() => (Returns::Result, None),
                inner => (Returns::Result, inner),
            },
            ty => (Returns::Value, Some(ty.clone())),
        },
    };
    if matches!(returns, Returns::Stream(_)) && args.iter().any(|(_, _, upload)| *upload) {
        return Err(syn::Error::new(
            func.sig.output.span(),
            "a hub method cannot both take an `Upload` and return a `HubStream`",
        ));
    }
    Ok(Method {
        wire_name: name_override.unwrap_or_else(|| pascal_case(&func.sig.ident.to_string())),
        ident: func.sig.ident.clone(),
        takes_context,
        args,
        returns,
        described,
        doc: doc_text(&func.attrs),
        span: func.sig.span(),
    })
}

/// Whether `ty` is a path whose last segment is `name` (`HubStream<T>`, `hubhost_sdk::HubStream<T>`).
fn named(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == name))
}

/// The first generic argument of `ty`'s last path segment (`T` of `Result<T, E>`).
fn first_argument(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let syn::PathArguments::AngleBracketed(args) = &p.path.segments.last()?.arguments else {
        return None;
    };
    args.args.iter().find_map(|arg| match arg {
        syn::GenericArgument::Type(ty) => Some(ty.clone()),
        _ => None,
    })
}

/// The method's doc comment, lines joined.
fn doc_text(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

/// A method's entry in `describe`.
fn description(m: &Method) -> TokenStream2 {
    let name = &m.wire_name;
    let doc = &m.doc;
    let params = m.args.iter().map(|(ident, ty, upload)| {
        let label = ident.to_string();
        // An upload describes its items.
        let ty = if *upload {
            first_argument(ty).unwrap_or_else(|| ty.clone())
        } else {
            ty.clone()
        };
        quote! {
            ::hubhost_sdk::__private::param_info(
                #label,
                (&::hubhost_sdk::__private::SchemaProbe::<#ty>::new()).schema(),
                #upload,
            )
        }
    });
    let returns = match &m.described {
        Some(ty) => quote! {
            ::core::option::Option::Some(
                (&::hubhost_sdk::__private::SchemaProbe::<#ty>::new()).schema(),
            )
        },
        None => quote!(::core::option::Option::None),
    };
    let streaming = matches!(m.returns, Returns::Stream(_));
    quote! {
        ::hubhost_sdk::__private::method_info(
            #name,
            #doc,
            ::std::vec![#(#params),*],
            #returns,
            #streaming,
        )
    }
}

impl Method {
    /// Whether it takes an `Upload`.
    fn uploads(&self) -> bool {
        self.args.iter().any(|(_, _, upload)| *upload)
    }
}

fn check_unique(methods: &[Method]) -> syn::Result<()> {
    for (i, m) in methods.iter().enumerate() {
        if let Some(other) = methods[..i]
            .iter()
            .find(|o| o.wire_name.eq_ignore_ascii_case(&m.wire_name))
        {
            return Err(syn::Error::new(
                m.span,
                format!(
                    "hub method name '{}' clashes with '{}' (names are matched case-insensitively); \
                     rename one or use #[hub(name = \"...\")]",
                    m.wire_name, other.wire_name
                ),
            ));
        }
    }
    Ok(())
}

fn dispatch_arm(m: &Method) -> TokenStream2 {
    let Method {
        ident,
        wire_name,
        takes_context,
        args,
        returns,
        span,
        ..
    } = m;
    let count = args.iter().filter(|(_, _, upload)| !upload).count();
    let decode = args.iter().map(|(name, ty, upload)| {
        let label = name.to_string();
        if *upload {
            quote_spanned! {ty.span()=>
                let #name: #ty = ::hubhost_sdk::Upload::__new(__event, __state);
            }
        } else {
            quote_spanned! {ty.span()=>
                let #name: #ty = __a.next(#label)?;
            }
        }
    });
    let names = args.iter().map(|(name, _, _)| name);
    let ctx = takes_context.then(|| quote!(__ctx,));
    let call = quote_spanned!(*span=> Self::#ident(#ctx #(#names),*));
    let ret = match returns {
        Returns::Nothing => quote! {
            #call;
            ::core::result::Result::Ok(::core::option::Option::None)
        },
        Returns::Result => quote!(::hubhost_sdk::__private::result_json(#call)),
        Returns::Value => quote!(::hubhost_sdk::__private::ok_json(&#call)),
        Returns::Stream(false) => quote!(#call.__step(__cursor)),
        Returns::Stream(true) => {
            quote!(::hubhost_sdk::__private::stream_of(#call)?.__step(__cursor))
        }
    };
    let ret = if m.uploads() {
        quote!(::hubhost_sdk::__private::upload_step({ #ret }))
    } else {
        ret
    };
    quote! {
        if __method.eq_ignore_ascii_case(#wire_name) {
            #[allow(unused_mut)]
            let mut __a = ::hubhost_sdk::__private::Args::parse(__args, #count)?;
            #(#decode)*
            return { #ret };
        }
    }
}

/// `send_to_room` -> `SendToRoom`.
fn pascal_case(name: &str) -> String {
    name.split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::pascal_case;

    #[test]
    fn pascal_case_joins_words() {
        assert_eq!(pascal_case("send"), "Send");
        assert_eq!(pascal_case("send_to_room"), "SendToRoom");
        assert_eq!(pascal_case("get_v2"), "GetV2");
        assert_eq!(pascal_case("_private_thing"), "PrivateThing");
    }
}
