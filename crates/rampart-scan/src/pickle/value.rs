//! The symbolic values of the pickle machine: enough structure to resolve imports and follow loaders, never more.
//!
//! Values are shared (`Rc`) so that memo reads and `DUP` cost nothing; containers keep at most [`ITEMS_CAP`]
//! items and values nest at most [`DEPTH_CAP`] levels, so hostile streams cannot make the scanner's memory
//! or recursion grow past a constant per operation.

use std::rc::Rc;

/// Items tracked per container; later items are counted but not kept.
pub(crate) const ITEMS_CAP: usize = 256;
/// Nesting kept per value; deeper values become [`Val::Unknown`].
pub(crate) const DEPTH_CAP: u16 = 32;

pub(crate) type V = Rc<Val>;

/// An imported name, `module` and `name` as the stream spelled them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Import {
    pub module: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Val {
    None,
    Bool,
    Int(i64),
    /// An integer too large for `i64`.
    BigInt,
    Float,
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Seq),
    List(Seq),
    /// Keys and values, alternating.
    Dict(Seq),
    Set(Seq),
    Global(Rc<Import>),
    /// The result of calling `callee` with `args` (REDUCE, NEWOBJ, OBJ, INST).
    Object {
        callee: V,
        args: V,
        depth: u16,
    },
    /// A persistent id: PyTorch storages, resolved by the loader, not by pickle.
    Persistent,
    Unknown,
}

/// The items of a container and its nesting depth.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seq {
    pub items: Vec<V>,
    pub depth: u16,
}

impl Seq {
    pub(crate) fn from_items(items: impl IntoIterator<Item = V>) -> Self {
        let mut seq = Seq::default();
        for item in items {
            seq.push(item);
        }
        seq
    }

    pub(crate) fn push(&mut self, item: V) {
        if self.items.len() >= ITEMS_CAP {
            return;
        }
        let d = item.depth();
        if d >= DEPTH_CAP {
            self.items.push(Rc::new(Val::Unknown));
            return;
        }
        self.depth = self.depth.max(d + 1);
        self.items.push(item);
    }
}

impl Val {
    pub(crate) fn depth(&self) -> u16 {
        match self {
            Val::Tuple(s) | Val::List(s) | Val::Dict(s) | Val::Set(s) => s.depth,
            Val::Object { depth, .. } => *depth,
            _ => 0,
        }
    }

    pub(crate) fn object(callee: V, args: V) -> Val {
        let depth = callee.depth().max(args.depth()) + 1;
        if depth >= DEPTH_CAP {
            return Val::Unknown;
        }
        Val::Object {
            callee,
            args,
            depth,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_global(&self) -> Option<&Import> {
        match self {
            Val::Global(g) => Some(g),
            _ => None,
        }
    }

    pub(crate) fn items(&self) -> &[V] {
        match self {
            Val::Tuple(s) | Val::List(s) | Val::Dict(s) | Val::Set(s) => &s.items,
            _ => &[],
        }
    }

    /// Looks a string key up in a dict value.
    pub(crate) fn dict_get(&self, key: &str) -> Option<&V> {
        let Val::Dict(seq) = self else { return None };
        seq.items
            .chunks_exact(2)
            .find(|kv| kv.first().and_then(|k| k.as_str()) == Some(key))
            .and_then(|kv| kv.get(1))
    }
}
