//! Attribute macros that turn plain Rust functions and `impl` blocks into
//! oxray remote functions and actor types, and register Rust envs
//! (`#[register_env]`, re-exported by `oxray-envs`).
//!
//! `#[remote]` keeps the function as it is and adds a module of the same name
//! (modules and functions live in different namespaces) holding `remote(..)`,
//! `options()` and the registry entry, so `add(1, 2)` still runs locally and
//! `add::remote(1, 2)` runs on the cluster. `#[actor]` does the same for an
//! `impl` block: `Counter::remote(..)` / `Counter::options()` create the actor
//! and the handle gets one method per `&self`/`&mut self` method. Registration
//! is a `linkme` slice entry, resolved at link time.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::{
    parse_macro_input, spanned::Spanned, FnArg, GenericArgument, ImplItem, ItemFn, ItemImpl, Pat,
    PathArguments, ReturnType, Signature, Type, Visibility,
};

/// Makes a function callable remotely: `name::remote(args..)` returns an
/// `ObjectRef` of its result; `name::options().num_cpus(0.5).remote(..)` sets
/// per-call options. Each argument accepts a value or an `ObjectRef` to one.
/// A function returning `Result<T, E>` yields `ObjectRef<T>`, and its `Err`
/// becomes the task's error.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            Span::call_site(),
            "#[remote] takes no arguments; set options per call with `name::options()`",
        )
        .to_compile_error()
        .into();
    }
    let function = parse_macro_input!(item as ItemFn);
    match expand_remote(&function) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

/// Makes the type of an `impl` block an actor type. The constructor is the
/// associated function returning `Self` (or `Result<Self, E>`); every `pub`
/// method taking `&self` or `&mut self` becomes callable on the handle. On an
/// actor created with `max_concurrency` above 1 (the type must be `Sync`) the
/// `&self` methods run at once on several threads and a `&mut self` method
/// runs alone. A block with an `async fn` method makes an async actor: its
/// calls run together on one event loop, so every method takes `&self`.
#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            Span::call_site(),
            "#[actor] takes no arguments; set options with `Type::options()`",
        )
        .to_compile_error()
        .into();
    }
    let block = parse_macro_input!(item as ItemImpl);
    match expand_actor(&block) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

struct Param {
    name: syn::Ident,
    ty: Type,
}

/// The typed parameters of a signature, skipping any receiver.
fn params(sig: &Signature) -> syn::Result<Vec<Param>> {
    sig.inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Receiver(_) => None,
            FnArg::Typed(typed) => Some(match &*typed.pat {
                Pat::Ident(ident) => Ok(Param {
                    name: ident.ident.clone(),
                    ty: (*typed.ty).clone(),
                }),
                other => Err(syn::Error::new(
                    other.span(),
                    "remote arguments must be plain names, not patterns",
                )),
            }),
        })
        .collect()
}

/// Whether a method takes `&self`: calls of it may share the state.
fn takes_shared_self(sig: &Signature) -> bool {
    matches!(
        sig.inputs.first(),
        Some(FnArg::Receiver(receiver)) if receiver.reference.is_some() && receiver.mutability.is_none()
    )
}

/// The value type a call yields, and whether the function returns `Result`.
fn output(sig: &Signature) -> (Type, bool) {
    let ReturnType::Type(_, ty) = &sig.output else {
        return (syn::parse_quote!(()), false);
    };
    if let Type::Path(path) = &**ty {
        if let Some(last) = path.path.segments.last() {
            if last.ident == "Result" {
                if let PathArguments::AngleBracketed(args) = &last.arguments {
                    if let Some(GenericArgument::Type(ok)) = args.args.first() {
                        return (ok.clone(), true);
                    }
                }
            }
        }
    }
    ((**ty).clone(), false)
}

/// `let a: A = decode_arg(..)?; ..` for each parameter.
fn decode_params(params: &[Param], name: &TokenStream2) -> TokenStream2 {
    let decodes = params.iter().enumerate().map(|(index, p)| {
        let (ident, ty) = (&p.name, &p.ty);
        quote! { let #ident: #ty = ::oxray_core::private::decode_arg(#name, args, #index)?; }
    });
    quote! { #(#decodes)* }
}

/// Turns a call's result into the encoded object, mapping `Err` to the task's error.
fn encode_output(call: TokenStream2, fallible: bool, name: &TokenStream2) -> TokenStream2 {
    if fallible {
        quote! {
            match #call {
                ::std::result::Result::Ok(value) => ::oxray_core::private::encode_result(&value),
                ::std::result::Result::Err(error) => ::std::result::Result::Err(::oxray_core::private::application_error(#name, &error)),
            }
        }
    } else {
        quote! { ::oxray_core::private::encode_result(&#call) }
    }
}

/// Items inside the generated module are seen from its parent, so private
/// functions get `pub(super)` items.
fn inner_visibility(vis: &Visibility) -> TokenStream2 {
    match vis {
        Visibility::Inherited => quote!(pub(super)),
        other => quote!(#other),
    }
}

fn expand_remote(function: &ItemFn) -> syn::Result<TokenStream2> {
    let sig = &function.sig;
    if sig.asyncness.is_some() || !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.span(),
            "#[remote] functions must be plain, non-async, non-generic functions",
        ));
    }
    let ident = &sig.ident;
    let vis = &function.vis;
    let inner_vis = inner_visibility(vis);
    let params = params(sig)?;
    let (ok_type, fallible) = output(sig);
    let names: Vec<_> = params.iter().map(|p| &p.name).collect();
    let types: Vec<_> = params.iter().map(|p| &p.ty).collect();
    let name = quote!(NAME);
    let decode = decode_params(&params, &name);
    let call = encode_output(quote!(super::#ident(#(#names),*)), fallible, &name);
    let doc = format!("Remote calls of [`{ident}`](fn@{ident}).");
    Ok(quote! {
        #function

        #[doc = #doc]
        #[allow(clippy::too_many_arguments)]
        #vis mod #ident {
            #[allow(unused_imports)]
            use super::*;

            /// Registered name of the function.
            #inner_vis const NAME: &str = module_path!();

            /// Runs the function on the cluster with default options.
            #inner_vis fn remote(#(#names: impl ::std::convert::Into<::oxray_core::Arg<#types>>),*) -> ::oxray_core::ObjectRef<#ok_type> {
                options().remote(#(#names),*)
            }

            /// Per-call options, as Ray's `.options(..)`.
            #inner_vis fn options() -> Call {
                Call(::oxray_core::TaskOptions::default())
            }

            /// A call being configured.
            #inner_vis struct Call(pub ::oxray_core::TaskOptions);

            impl Call {
                ::oxray_core::__task_option_setters!();

                /// Submits the call.
                pub fn remote(self, #(#names: impl ::std::convert::Into<::oxray_core::Arg<#types>>),*) -> ::oxray_core::ObjectRef<#ok_type> {
                    let args = ::std::vec![#(::oxray_core::private::task_arg::<#types>(#names.into())),*];
                    ::oxray_core::private::submit_function(NAME, args, &self.0)
                }
            }

            #[::oxray_core::private::linkme::distributed_slice(::oxray_core::private::REMOTE_FUNCTIONS)]
            #[linkme(crate = ::oxray_core::private::linkme)]
            static ENTRY: ::oxray_core::private::RemoteFunction = ::oxray_core::private::RemoteFunction { name: NAME, invoke };

            fn invoke(args: &[::oxray_core::private::ObjectBlob]) -> ::oxray_core::Result<::oxray_core::private::ObjectBlob> {
                #decode
                #call
            }
        }
    })
}

fn expand_actor(block: &ItemImpl) -> syn::Result<TokenStream2> {
    if block.trait_.is_some() || !block.generics.params.is_empty() {
        return Err(syn::Error::new(
            block.span(),
            "#[actor] goes on a plain, non-generic `impl Type { .. }` block",
        ));
    }
    let Type::Path(self_path) = &*block.self_ty else {
        return Err(syn::Error::new(
            block.self_ty.span(),
            "#[actor] needs a named type",
        ));
    };
    let self_ty = &block.self_ty;
    let type_ident = &self_path
        .path
        .segments
        .last()
        .expect("a type path has a segment")
        .ident;
    let client = format_ident!("{}Client", type_ident);
    let options = format_ident!("{}Options", type_ident);
    let type_name = type_ident.to_string();

    let mut constructor = None;
    let mut methods = Vec::new();
    for item in &block.items {
        let ImplItem::Fn(f) = item else { continue };
        let has_receiver = matches!(f.sig.inputs.first(), Some(FnArg::Receiver(_)));
        let (ok, fallible) = output(&f.sig);
        let returns_self = matches!(&ok, Type::Path(p) if p.path.is_ident("Self") || p.path.segments.last().is_some_and(|s| s.ident == *type_ident));
        if !has_receiver && returns_self && constructor.is_none() {
            constructor = Some((f.sig.clone(), fallible));
        } else if has_receiver && matches!(f.vis, Visibility::Public(_)) {
            methods.push(f.sig.clone());
        }
    }
    let Some((ctor_sig, ctor_fallible)) = constructor else {
        return Err(syn::Error::new(
            block.span(),
            "#[actor] needs a constructor: an associated fn returning Self",
        ));
    };

    let name = quote!(<#self_ty as ::oxray_core::ActorClass>::NAME);
    let ctor_ident = &ctor_sig.ident;
    let ctor_params = params(&ctor_sig)?;
    let ctor_names: Vec<_> = ctor_params.iter().map(|p| &p.name).collect();
    let ctor_types: Vec<_> = ctor_params.iter().map(|p| &p.ty).collect();
    let ctor_decode = decode_params(&ctor_params, &name);
    let construct_value = if ctor_fallible {
        quote! {
            <#self_ty>::#ctor_ident(#(#ctor_names),*).map_err(|error| ::oxray_core::private::application_error(#name, &error))?
        }
    } else {
        quote! { <#self_ty>::#ctor_ident(#(#ctor_names),*) }
    };

    let is_async = methods.iter().any(|sig| sig.asyncness.is_some());
    if ctor_sig.asyncness.is_some() {
        return Err(syn::Error::new(
            ctor_sig.span(),
            "an actor's constructor cannot be async: it runs before the actor's event loop",
        ));
    }
    if is_async {
        if let Some(sig) = methods.iter().find(|sig| !takes_shared_self(sig)) {
            return Err(syn::Error::new(
                sig.span(),
                "an actor with async methods runs its calls together on one event loop, \
                 sharing its state: every method takes `&self` (keep what changes in a Cell, \
                 RefCell or Mutex)",
            ));
        }
    }

    let mut client_methods = Vec::new();
    let mut async_arms = Vec::new();
    let mut shared_arms = Vec::new();
    let mut shared_names = Vec::new();
    let mut exclusive_arms = Vec::new();
    for sig in &methods {
        let method = &sig.ident;
        let method_name = method.to_string();
        let method_params = params(sig)?;
        let names: Vec<_> = method_params.iter().map(|p| &p.name).collect();
        let types: Vec<_> = method_params.iter().map(|p| &p.ty).collect();
        let (ok_type, fallible) = output(sig);
        let doc = format!("Calls [`{type_name}::{method_name}`] on the actor.");
        client_methods.push(quote! {
            #[doc = #doc]
            pub fn #method(&self, #(#names: impl ::std::convert::Into<::oxray_core::Arg<#types>>),*) -> ::oxray_core::ObjectRef<#ok_type> {
                let args = ::std::vec![#(::oxray_core::private::task_arg::<#types>(#names.into())),*];
                self.raw.call(#method_name, args)
            }
        });
        let decode = decode_params(&method_params, &name);
        if is_async {
            let invoke = match sig.asyncness {
                Some(_) => quote!(this.#method(#(#names),*).await),
                None => quote!(this.#method(#(#names),*)),
            };
            let call = encode_output(invoke, fallible, &name);
            async_arms.push(quote! {
                #method_name => {
                    let started = (move || -> ::oxray_core::Result<::oxray_core::private::LocalCall> {
                        #decode
                        ::std::result::Result::Ok(::std::boxed::Box::pin(async move { #call }))
                    })();
                    started.unwrap_or_else(|error| ::oxray_core::private::ended_call(::std::result::Result::Err(error)))
                }
            });
            if sig.asyncness.is_some() {
                continue;
            }
        }
        let call = encode_output(quote!(this.#method(#(#names),*)), fallible, &name);
        let arm = quote! {
            #method_name => {
                #decode
                #call
            }
        };
        if takes_shared_self(sig) {
            shared_names.push(method_name);
            shared_arms.push(arm);
        } else {
            exclusive_arms.push(arm);
        }
    }

    let (call_async_entry, call_async_fn) = if is_async {
        let call_async_fn = quote! {
            /// Starts any method on the actor's event loop.
            fn call_async(state: &::std::rc::Rc<dyn ::std::any::Any>, method: &str, args: &[::oxray_core::private::ObjectBlob]) -> ::oxray_core::private::LocalCall {
                let this: ::std::rc::Rc<#self_ty> = match ::oxray_core::private::local_actor_state(state, #name) {
                    ::std::result::Result::Ok(this) => this,
                    ::std::result::Result::Err(error) => return ::oxray_core::private::ended_call(::std::result::Result::Err(error)),
                };
                match method {
                    #(#async_arms)*
                    other => ::oxray_core::private::ended_call(::std::result::Result::Err(::oxray_core::private::unknown_method(#name, other))),
                }
            }
        };
        (
            quote!(::std::option::Option::Some(call_async)),
            call_async_fn,
        )
    } else {
        (quote!(::std::option::Option::None), quote!())
    };

    let client_doc =
        format!("Methods of a [`{type_name}`] actor, reached through its `ActorHandle`.");
    let options_doc = format!("Options for creating a [`{type_name}`] actor.");
    Ok(quote! {
        // Actors are built remotely from their constructor's arguments; a
        // `Default` would never be called.
        #[allow(clippy::new_without_default)]
        #block

        impl ::oxray_core::ActorClass for #self_ty {
            const NAME: &'static str = concat!(module_path!(), "::", #type_name);
            type Client = #client;
            const ASYNC: bool = #is_async;

            fn is_sync() -> bool {
                #[allow(unused_imports)]
                use ::oxray_core::private::{ShareIfSync as _, ShareNever as _};
                (&::oxray_core::private::SyncProbe::<Self>(::std::marker::PhantomData)).is_sync()
            }
        }

        #[doc = #client_doc]
        #[derive(Clone, Debug)]
        pub struct #client {
            raw: ::oxray_core::RawActor,
        }

        impl ::std::convert::From<::oxray_core::RawActor> for #client {
            fn from(raw: ::oxray_core::RawActor) -> Self {
                #client { raw }
            }
        }

        impl ::std::convert::AsRef<::oxray_core::RawActor> for #client {
            fn as_ref(&self) -> &::oxray_core::RawActor {
                &self.raw
            }
        }

        impl #client {
            #(#client_methods)*
        }

        #[doc = #options_doc]
        pub struct #options(pub ::oxray_core::ActorOptions);

        impl #options {
            ::oxray_core::__actor_option_setters!();

            /// Creates the actor; its constructor runs in a new worker process.
            pub fn remote(self, #(#ctor_names: impl ::std::convert::Into<::oxray_core::Arg<#ctor_types>>),*) -> ::oxray_core::Result<::oxray_core::ActorHandle<#self_ty>> {
                let args = ::std::vec![#(::oxray_core::private::task_arg::<#ctor_types>(#ctor_names.into())),*];
                ::oxray_core::private::create_actor::<#self_ty>(args, &self.0)
            }
        }

        impl #self_ty {
            /// Creates the actor with default options (Ray's `Type.remote(..)`).
            pub fn remote(#(#ctor_names: impl ::std::convert::Into<::oxray_core::Arg<#ctor_types>>),*) -> ::oxray_core::Result<::oxray_core::ActorHandle<#self_ty>> {
                Self::options().remote(#(#ctor_names),*)
            }

            /// Options for creating the actor (Ray's `Type.options(..)`).
            pub fn options() -> #options {
                #options(::oxray_core::ActorOptions::default())
            }
        }

        const _: () = {
            #[::oxray_core::private::linkme::distributed_slice(::oxray_core::private::ACTOR_TYPES)]
            #[linkme(crate = ::oxray_core::private::linkme)]
            static ENTRY: ::oxray_core::private::ActorType = ::oxray_core::private::ActorType {
                name: #name,
                construct,
                call,
                call_shared,
                share,
                call_async: #call_async_entry,
            };

            #call_async_fn

            fn construct(args: &[::oxray_core::private::ObjectBlob]) -> ::oxray_core::Result<::oxray_core::private::ActorState> {
                #ctor_decode
                ::std::result::Result::Ok(::std::boxed::Box::new(#construct_value))
            }

            /// Any method, with the state to itself.
            fn call(state: &mut dyn ::std::any::Any, method: &str, args: &[::oxray_core::private::ObjectBlob]) -> ::oxray_core::Result<::oxray_core::private::ObjectBlob> {
                let this: &mut #self_ty = ::oxray_core::private::actor_state(state, #name)?;
                match method {
                    #(#exclusive_arms)*
                    other => call_ref(this, other, args),
                }
            }

            /// A `&self` method, on a state other calls may be reading.
            fn call_shared(state: &dyn ::std::any::Any, method: &str, args: &[::oxray_core::private::ObjectBlob]) -> ::std::option::Option<::oxray_core::Result<::oxray_core::private::ObjectBlob>> {
                const SHARED: &[&str] = &[#(#shared_names),*];
                if !SHARED.contains(&method) {
                    return ::std::option::Option::None;
                }
                let this: &#self_ty = ::oxray_core::private::shared_actor_state(state)?;
                ::std::option::Option::Some(call_ref(this, method, args))
            }

            fn call_ref(this: &#self_ty, method: &str, args: &[::oxray_core::private::ObjectBlob]) -> ::oxray_core::Result<::oxray_core::private::ObjectBlob> {
                match method {
                    #(#shared_arms)*
                    other => ::std::result::Result::Err(::oxray_core::private::unknown_method(#name, other)),
                }
            }

            fn share(state: ::oxray_core::private::ActorState) -> ::std::result::Result<::oxray_core::private::SharedActorState, ::oxray_core::private::ActorState> {
                #[allow(unused_imports)]
                use ::oxray_core::private::{ShareIfSync as _, ShareNever as _};
                (&::oxray_core::private::SyncProbe::<#self_ty>(::std::marker::PhantomData)).share(state)
            }
        };
    })
}

/// The arguments of `#[register_env("Id-v0", max_episode_steps = 200, reward_threshold = 1.0)]`.
struct EnvRegistration {
    id: syn::LitStr,
    max_episode_steps: Option<syn::Expr>,
    reward_threshold: Option<syn::Expr>,
}

impl syn::parse::Parse for EnvRegistration {
    fn parse(input: syn::parse::ParseStream) -> syn::Result<Self> {
        let id: syn::LitStr = input.parse()?;
        let mut registration = EnvRegistration {
            id,
            max_episode_steps: None,
            reward_threshold: None,
        };
        while !input.is_empty() {
            input.parse::<syn::Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key: syn::Ident = input.parse()?;
            input.parse::<syn::Token![=]>()?;
            let value: syn::Expr = input.parse()?;
            match key.to_string().as_str() {
                "max_episode_steps" => registration.max_episode_steps = Some(value),
                "reward_threshold" => registration.reward_threshold = Some(value),
                _ => {
                    return Err(syn::Error::new(
                        key.span(),
                        "expected `max_episode_steps = N` or `reward_threshold = X`",
                    ))
                }
            }
        }
        Ok(registration)
    }
}

/// Registers a Rust env under an id at link time, so every process of the
/// binary (the driver and each worker it starts) can build it, as
/// `#[remote]` does for functions. Goes on the env's constructor, a function
/// from the config's keyword arguments to the env:
///
/// ```ignore
/// #[oxray_envs::register_env("GridWorld-v0", max_episode_steps = 100)]
/// fn grid_world(kwargs: &oxray_envs::Kwargs) -> Result<GridWorld, oxray_envs::EnvError> { .. }
/// ```
#[proc_macro_attribute]
pub fn register_env(attr: TokenStream, item: TokenStream) -> TokenStream {
    let registration = parse_macro_input!(attr as EnvRegistration);
    let function = parse_macro_input!(item as ItemFn);
    let name = &function.sig.ident;
    let static_name = format_ident!("__OXRAY_ENV_{}", name.to_string().to_uppercase());
    let id = &registration.id;
    let optional = |value: &Option<syn::Expr>| match value {
        Some(value) => quote! { ::std::option::Option::Some(#value) },
        None => quote! { ::std::option::Option::None },
    };
    let max_episode_steps = optional(&registration.max_episode_steps);
    let reward_threshold = optional(&registration.reward_threshold);
    quote! {
        #function

        #[::oxray_envs::private::linkme::distributed_slice(::oxray_envs::private::LINKED_ENVS)]
        #[linkme(crate = ::oxray_envs::private::linkme)]
        static #static_name: ::oxray_envs::private::LinkedEnv = ::oxray_envs::private::LinkedEnv {
            id: #id,
            max_episode_steps: #max_episode_steps,
            reward_threshold: #reward_threshold,
            make: |kwargs| {
                #name(kwargs).map(|env| {
                    ::std::boxed::Box::new(env) as ::std::boxed::Box<dyn ::oxray_envs::Env>
                })
            },
        };
    }
    .into()
}
