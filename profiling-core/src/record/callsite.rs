//! Function identity: one `static` [`Callsite`] per annotated function, resolved once to a
//! small integer id that indexes every per-thread table.
//!
//! The registry of function metadata is global and append-only; it grows with distinct
//! functions, never with calls. Spans seen by the tracing layer register here too.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};

/// Most distinct functions recorded; later ones are counted under one pseudo-function named
/// `<functions beyond the registry cap>`.
pub const MAX_FUNCTIONS: usize = 16_384;
/// Id of the pseudo-function that receives functions beyond [`MAX_FUNCTIONS`].
pub(crate) const OVERFLOW_FUNCTION: u32 = 0;
const UNRESOLVED: u32 = u32::MAX;

/// How a function's calls are delimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum CallsiteKind {
    /// A plain function: one call is one entry and exit on one thread.
    #[default]
    Sync,
    /// An `async fn`: one call is one future, from first poll to completion; busy time is the
    /// sum of its polls.
    Async,
    /// A `tracing` span: from first enter to last exit; busy time is the sum of its entries.
    Span,
}

/// Metadata of a recorded function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionMeta {
    /// Display name, e.g. `my_crate::db::Store::get`.
    pub name: String,
    /// Module path (or tracing target).
    pub module: String,
    /// Source file.
    pub file: String,
    /// Source line.
    pub line: u32,
    /// How calls are delimited.
    pub kind: CallsiteKind,
}

/// The per-function `static` that `#[profiled]` emits.
#[derive(Debug)]
pub struct Callsite {
    id: AtomicU32,
    name: Option<&'static str>,
    fn_name: &'static str,
    module_path: &'static str,
    file: &'static str,
    line: u32,
    kind: CallsiteKind,
}

impl Callsite {
    /// A callsite for `fn_name` in `module_path`. `name` overrides the display name.
    pub const fn new(
        name: Option<&'static str>,
        fn_name: &'static str,
        module_path: &'static str,
        file: &'static str,
        line: u32,
        kind: CallsiteKind,
    ) -> Self {
        Self {
            id: AtomicU32::new(UNRESOLVED),
            name,
            fn_name,
            module_path,
            file,
            line,
            kind,
        }
    }

    /// The function id, registering the function on first use.
    #[inline(always)]
    pub(crate) fn id(&'static self, self_type: Option<fn() -> &'static str>) -> u32 {
        let id = self.id.load(Ordering::Relaxed);
        if id != UNRESOLVED {
            return id;
        }
        self.register(self_type)
    }

    #[cold]
    #[inline(never)]
    fn register(&'static self, self_type: Option<fn() -> &'static str>) -> u32 {
        crate::record::alloc::untracked(|| self.register_untracked(self_type))
    }

    fn register_untracked(&'static self, self_type: Option<fn() -> &'static str>) -> u32 {
        let name = match (self.name, self_type) {
            (Some(n), _) => n.to_owned(),
            (None, Some(ty)) => format!("{}::{}::{}", self.module_path, short_type_name(ty()), self.fn_name),
            (None, None) => format!("{}::{}", self.module_path, self.fn_name),
        };
        let meta = FunctionMeta {
            name,
            module: self.module_path.to_owned(),
            file: self.file.to_owned(),
            line: self.line,
            kind: self.kind,
        };
        // Two threads may race here; `register_function` deduplicates by key.
        let id = register_function(FunctionKey::Callsite(self as *const _ as usize), meta);
        self.id.store(id, Ordering::Relaxed);
        id
    }
}

/// `my_crate::Foo<u32>` -> `Foo`; `&mut my_crate::Foo` -> `Foo`; `dyn my::Tr` -> `Tr`.
pub(crate) fn short_type_name(full: &str) -> &str {
    let base = full.split('<').next().unwrap_or(full);
    let base = base
        .trim_start_matches(['&', '*'])
        .trim_start_matches("mut ")
        .trim_start_matches("dyn ");
    base.rsplit("::").next().unwrap_or(base)
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum FunctionKey {
    Callsite(usize),
    Span(usize),
    Overflow,
}

struct FunctionRegistry {
    keys: Vec<FunctionKey>,
    map: std::collections::HashMap<FunctionKey, u32>,
}

static REGISTRY: Mutex<Option<FunctionRegistry>> = Mutex::new(None);
static METAS: RwLock<Vec<FunctionMeta>> = RwLock::new(Vec::new());

/// Registers a function (idempotent per key) and returns its id.
pub(crate) fn register_function(key: FunctionKey, meta: FunctionMeta) -> u32 {
    let mut guard = match REGISTRY.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let reg = guard.get_or_insert_with(|| {
        let mut r = FunctionRegistry {
            keys: Vec::new(),
            map: std::collections::HashMap::new(),
        };
        r.keys.push(FunctionKey::Overflow);
        r.map.insert(FunctionKey::Overflow, OVERFLOW_FUNCTION);
        let mut metas = METAS.write().unwrap_or_else(|p| p.into_inner());
        metas.push(FunctionMeta {
            name: "<functions beyond the registry cap>".to_owned(),
            module: String::new(),
            file: String::new(),
            line: 0,
            kind: CallsiteKind::Sync,
        });
        r
    });
    if let Some(&id) = reg.map.get(&key) {
        return id;
    }
    if reg.keys.len() >= MAX_FUNCTIONS {
        return OVERFLOW_FUNCTION;
    }
    let id = reg.keys.len() as u32;
    reg.keys.push(key);
    reg.map.insert(key, id);
    METAS.write().unwrap_or_else(|p| p.into_inner()).push(meta);
    id
}

/// A copy of all function metadata, indexed by id.
pub(crate) fn all_functions() -> Vec<FunctionMeta> {
    METAS.read().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_type_names() {
        assert_eq!(short_type_name("a::b::Foo<u32, c::D>"), "Foo");
        assert_eq!(short_type_name("&mut a::Foo"), "Foo");
        assert_eq!(short_type_name("dyn a::Tr"), "Tr");
        assert_eq!(short_type_name("Foo"), "Foo");
    }

    #[test]
    fn callsite_resolves_once_with_method_name() {
        static CS: Callsite = Callsite::new(None, "get", "my::db", "db.rs", 3, CallsiteKind::Sync);
        let a = CS.id(Some(|| "my::db::Store<u8>"));
        let b = CS.id(Some(|| "other"));
        assert_eq!(a, b);
        assert_eq!(all_functions()[a as usize].name, "my::db::Store::get");
    }
}
