//! The runtime form of the R4 definitions: one [`Node`] per resource type, complex datatype
//! and backbone element, each with a hash map from JSON property name to element, so that
//! validation and the views do one lookup per property. Built once from the compact model;
//! knows nothing of JSON instances.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::primitive::Prim;
use crate::vendor::{CompactModel, CompactType};

/// FNV-1a: property names are short, trusted-length keys, so SipHash's DoS resistance buys
/// nothing here and costs a third of a lookup.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

pub(crate) type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// What a value of an element is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Prim(Prim),
    /// A complex datatype or a backbone element: an object checked against that node.
    Node(u32),
    /// Any resource (`Bundle.entry.resource`, `DomainResource.contained`).
    Resource,
}

#[derive(Debug)]
pub(crate) struct Elem {
    /// The element name, without `[x]` for choices: `value`, `birthDate`.
    pub name: Box<str>,
    pub min: u32,
    /// `max = "*"`: represented as a JSON array.
    pub many: bool,
    pub summary: bool,
    pub choice: bool,
    /// `isModifier`.
    pub modifier: bool,
    /// The ValueSet canonical of a `required` binding.
    pub binding: Option<Box<str>>,
    /// The allowed types (one unless `choice`); for a choice, the lookup maps each
    /// property name (`valueQuantity`) to its index here.
    pub types: Vec<Ty>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Resource,
    Datatype,
    Backbone,
}

#[derive(Debug)]
pub(crate) struct Node {
    /// `Patient`, `Patient.contact`, `HumanName`.
    pub label: Box<str>,
    pub kind: NodeKind,
    pub elems: Vec<Elem>,
    /// JSON property name (`valueQuantity`, `name`) → (element index, type index).
    pub lookup: FnvMap<Box<str>, (u16, u16)>,
    /// Indexes of the elements with `min >= 1`.
    pub required: Vec<u16>,
}

impl Node {
    pub(crate) fn get(&self, property: &str) -> Option<(&Elem, Ty)> {
        let &(e, t) = self.lookup.get(property)?;
        let elem = self.elems.get(usize::from(e))?;
        let ty = *elem.types.get(usize::from(t))?;
        Some((elem, ty))
    }
}

/// Nodes have at most this many elements (ElementDefinition has 83), so that
/// presence can be tracked in a fixed bit set.
pub(crate) const MAX_ELEMS: usize = 256;

pub(crate) struct Model {
    pub resource_types: Vec<String>,
    pub nodes: Vec<Node>,
    /// Concrete resource type → its root node.
    pub resources: FnvMap<Box<str>, u32>,
    /// The node of `Element` (`id`, `extension`): the shape of a `_name` primitive extension.
    pub element_node: u32,
}

impl Model {
    pub(crate) fn resource(&self, name: &str) -> Option<&Node> {
        self.resources
            .get(name)
            .and_then(|&n| self.nodes.get(n as usize))
    }
    pub(crate) fn node(&self, n: u32) -> Option<&Node> {
        self.nodes.get(n as usize)
    }
}

/// An element before its types are resolved to nodes.
struct Pending<'a> {
    node: u32,
    elem: usize,
    codes: &'a [Cow<'a, str>],
    /// The node of the backbone element this element introduces, if it has children.
    backbone: Option<u32>,
    content_reference: Option<&'a str>,
}

/// (type name, path below it) → node; the path is empty for the type itself.
type PathMap<'a> = FnvMap<(&'a str, &'a str), u32>;

pub(crate) fn build(compact: &CompactModel<'_>) -> Result<Model, String> {
    let mut nodes: Vec<Node> = Vec::with_capacity(1024);
    let mut by_path: PathMap<'_> = FnvMap::default();
    let mut pending: Vec<Pending<'_>> = Vec::with_capacity(8192);

    for t in compact.types.iter().filter(|t| t.kind != "primitive-type") {
        let kind = if t.kind == "resource" {
            NodeKind::Resource
        } else {
            NodeKind::Datatype
        };
        let root = new_node(&mut nodes, t.name.as_ref().into(), kind);
        by_path.insert((&t.name, ""), root);
        add_elements(t, &mut nodes, &mut by_path, &mut pending)?;
    }

    for node in &mut nodes {
        node.lookup.reserve(node.elems.len());
    }
    for p in pending {
        let mut types = Vec::with_capacity(p.codes.len().max(1));
        if let Some(r) = p.content_reference {
            let target = r.trim_start_matches('#');
            let key = target.split_once('.').unwrap_or((target, ""));
            let n = by_path
                .get(&key)
                .ok_or_else(|| format!("unresolved contentReference {r}"))?;
            types.push(Ty::Node(*n));
        }
        for code in p.codes {
            let code: &str = code;
            let ty = if let Some(prim) = Prim::from_code(code) {
                Ty::Prim(prim)
            } else if code == "Resource" {
                Ty::Resource
            } else if let (Some(b), "BackboneElement" | "Element") = (p.backbone, code) {
                Ty::Node(b)
            } else if let Some(n) = by_path.get(&(code, "")) {
                Ty::Node(*n)
            } else {
                return Err(format!("unknown type code {code}"));
            };
            types.push(ty);
        }
        let node = &mut nodes[p.node as usize];
        let elem = &mut node.elems[p.elem];
        elem.types = types;
        let idx = p.elem as u16;
        if elem.choice {
            // A choice has type codes, never a contentReference.
            for (ti, code) in p.codes.iter().enumerate() {
                let mut key = String::with_capacity(elem.name.len() + code.len());
                key.push_str(&elem.name);
                let mut chars = code.chars();
                if let Some(first) = chars.next() {
                    key.extend(first.to_uppercase());
                    key.push_str(chars.as_str());
                }
                node.lookup.insert(key.into(), (idx, ti as u16));
            }
        } else {
            node.lookup.insert(elem.name.clone(), (idx, 0));
        }
    }
    for node in &mut nodes {
        if node.elems.len() > MAX_ELEMS {
            return Err(format!("{} has more than {MAX_ELEMS} elements", node.label));
        }
        node.required = (0..node.elems.len() as u16)
            .filter(|&i| node.elems[usize::from(i)].min >= 1)
            .collect();
    }

    let mut resources = FnvMap::default();
    for rt in &compact.resource_types {
        let n = by_path
            .get(&(rt.as_ref(), ""))
            .ok_or_else(|| format!("no definition for resource type {rt}"))?;
        resources.insert(Box::from(rt.as_ref()), *n);
    }
    let element_node = *by_path
        .get(&("Element", ""))
        .ok_or("no definition for Element")?;
    Ok(Model {
        resource_types: compact
            .resource_types
            .iter()
            .map(|t| t.to_string())
            .collect(),
        nodes,
        resources,
        element_node,
    })
}

fn new_node(nodes: &mut Vec<Node>, label: Box<str>, kind: NodeKind) -> u32 {
    nodes.push(Node {
        label,
        kind,
        elems: Vec::new(),
        lookup: FnvMap::default(),
        required: Vec::new(),
    });
    (nodes.len() - 1) as u32
}

fn add_elements<'a>(
    t: &'a CompactType<'a>,
    nodes: &mut Vec<Node>,
    by_path: &mut PathMap<'a>,
    pending: &mut Vec<Pending<'a>>,
) -> Result<(), String> {
    // Elements with children introduce a backbone node. The snapshot lists a parent right
    // before its first child.
    for (i, e) in t.elements.iter().enumerate() {
        let path: &str = &e.path;
        let (parent_path, last) = path.rsplit_once('.').unwrap_or(("", path));
        let has_children = t.elements.get(i + 1).is_some_and(|next| {
            next.path.len() > path.len()
                && next.path.starts_with(path)
                && next.path.as_bytes()[path.len()] == b'.'
        });
        let parent = *by_path
            .get(&(t.name.as_ref(), parent_path))
            .ok_or_else(|| format!("{}.{path}: parent not defined first", t.name))?;
        let backbone = if has_children {
            let n = new_node(
                nodes,
                format!("{}.{path}", t.name).into(),
                NodeKind::Backbone,
            );
            by_path.insert((&t.name, path), n);
            Some(n)
        } else {
            None
        };
        let node = &mut nodes[parent as usize];
        node.elems.push(Elem {
            name: last.trim_end_matches("[x]").into(),
            min: e.min,
            many: e.max != "1" && e.max != "0",
            summary: e.summary,
            choice: e.choice,
            modifier: e.modifier,
            binding: e.required_binding.as_deref().map(Box::from),
            types: Vec::new(),
        });
        pending.push(Pending {
            node: parent,
            elem: node.elems.len() - 1,
            codes: &e.types,
            backbone,
            content_reference: e.content_reference.as_deref(),
        });
    }
    Ok(())
}
