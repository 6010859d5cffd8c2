//! The permission model, compiled: roles and their inheritance flattened at load into each
//! role's effective grants, indexed so that a decision is a few hash lookups, with no
//! allocation and no lock.
//!
//! A permission is `resource:action`; a grant may put `*` in either part (`orders:*`,
//! `*:read`, `*:*`). A requested permission is concrete. Names are interned once into small
//! numbers ([`Names`]), so a compiled role holds integers, and a request parsed once (at a
//! guard's construction) is decided without touching a string.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{PoisonError, RwLock};

use crate::config::RoleConfig;

/// The most distinct resource and action names interned (each a few bytes; the guards and the
/// configuration name them, never a request's data).
pub(crate) const MAX_NAMES: usize = 65_536;

/// The process's names: one interner, so a permission parsed once decides under every policy
/// loaded later.
pub(crate) static NAMES: std::sync::LazyLock<Names> = std::sync::LazyLock::new(Names::default);

type Map<K, V> = HashMap<K, V, foldhash::fast::FixedState>;
type Set<T> = HashSet<T, foldhash::fast::FixedState>;

/// The interned resource and action names: append-only, so an id stays valid across policy
/// reloads (a guard keeps its parsed permission for the life of the process).
#[derive(Debug, Default)]
pub(crate) struct Names {
    ids: RwLock<Map<Box<str>, u32>>,
}

impl Names {
    /// The id of `name`, interned on first use; `None` past [`MAX_NAMES`].
    fn intern(&self, name: &str) -> Option<u32> {
        if let Some(id) = self.get(name) {
            return Some(id);
        }
        let mut ids = self.ids.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = ids.get(name) {
            return Some(*id);
        }
        let id = u32::try_from(ids.len())
            .ok()
            .filter(|id| (*id as usize) < MAX_NAMES)?;
        ids.insert(name.into(), id);
        Some(id)
    }

    /// The id of `name`, if it was ever interned.
    fn get(&self, name: &str) -> Option<u32> {
        self.ids
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
    }
}

/// One part of a permission: a name, or `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    Any,
    Name(u32),
}

/// Whether `text` is a usable part: `*`, or letters, digits, `_`, `-`, `.` and `/`.
fn valid_part(text: &str) -> bool {
    text == "*"
        || (!text.is_empty()
            && text.len() <= 128
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/')))
}

/// Splits `resource:action`, or says what is wrong with it.
pub(crate) fn split(permission: &str) -> Result<(&str, &str), String> {
    let Some((resource, action)) = permission.split_once(':') else {
        return Err(format!(
            "{permission:?} is not a permission: write it resource:action, like \"orders:read\""
        ));
    };
    if !valid_part(resource) || !valid_part(action) || action.contains(':') {
        return Err(format!(
            "{permission:?} is not a permission: the resource and the action are letters, digits, '_', '-', '.', '/' or \"*\""
        ));
    }
    Ok((resource, action))
}

/// A concrete permission a check asks for, parsed once: decided without a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Wanted {
    resource: u32,
    action: u32,
}

impl Wanted {
    /// Parses and interns `permission` (no `*`: a check asks for one thing).
    pub(crate) fn parse(names: &Names, permission: &str) -> Result<Self, String> {
        let (resource, action) = split(permission)?;
        if resource == "*" || action == "*" {
            return Err(format!(
                "{permission:?} asks for a wildcard; a check names one permission, like \"orders:write\" (wildcards are for roles)"
            ));
        }
        let full = || format!("too many permission names (more than {MAX_NAMES})");
        Ok(Self {
            resource: names.intern(resource).ok_or_else(full)?,
            action: names.intern(action).ok_or_else(full)?,
        })
    }
}

/// What one role may do, inheritance included.
#[derive(Debug, Default, Clone)]
struct Grants {
    /// `*:*`.
    all: bool,
    /// `resource:*`, by resource.
    any_action: Set<u32>,
    /// `*:action`, by action.
    any_resource: Set<u32>,
    /// `resource:action`.
    exact: Set<(u32, u32)>,
}

impl Grants {
    fn add(&mut self, resource: Part, action: Part) {
        match (resource, action) {
            (Part::Any, Part::Any) => self.all = true,
            (Part::Name(r), Part::Any) => {
                self.any_action.insert(r);
            }
            (Part::Any, Part::Name(a)) => {
                self.any_resource.insert(a);
            }
            (Part::Name(r), Part::Name(a)) => {
                self.exact.insert((r, a));
            }
        }
    }

    fn merge(&mut self, other: &Grants) {
        self.all |= other.all;
        self.any_action.extend(other.any_action.iter().copied());
        self.any_resource.extend(other.any_resource.iter().copied());
        self.exact.extend(other.exact.iter().copied());
    }

    fn allows(&self, wanted: Wanted) -> bool {
        self.all
            || self.any_action.contains(&wanted.resource)
            || self.any_resource.contains(&wanted.action)
            || self.exact.contains(&(wanted.resource, wanted.action))
    }

    fn is_empty(&self) -> bool {
        !self.all
            && self.any_action.is_empty()
            && self.any_resource.is_empty()
            && self.exact.is_empty()
    }
}

/// The policy, compiled: each role's effective grants, and the roles of the users the
/// configuration names.
#[derive(Debug, Default)]
pub(crate) struct Compiled {
    roles: Map<Box<str>, Grants>,
    users: Map<Box<str>, Vec<Box<str>>>,
}

impl Compiled {
    /// Compiles `roles` and `users`: inheritance flattened (a cycle is an error naming it), every
    /// permission parsed. Errors name their key path (`authz.roles.admin.inherits`).
    pub(crate) fn new(
        names: &Names,
        roles: &BTreeMap<String, RoleConfig>,
        users: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut problems = Vec::new();
        // Each role's own grants.
        let mut own: BTreeMap<&str, Grants> = BTreeMap::new();
        for (name, role) in roles {
            let mut grants = Grants::default();
            for permission in &role.permissions {
                match split(permission) {
                    Ok((resource, action)) => {
                        let part = |text: &str| {
                            if text == "*" {
                                Some(Part::Any)
                            } else {
                                names.intern(text).map(Part::Name)
                            }
                        };
                        match (part(resource), part(action)) {
                            (Some(r), Some(a)) => grants.add(r, a),
                            _ => problems.push((
                                format!("authz.roles.{name}.permissions"),
                                format!("too many permission names (more than {MAX_NAMES})"),
                            )),
                        }
                    }
                    Err(why) => problems.push((format!("authz.roles.{name}.permissions"), why)),
                }
            }
            for parent in &role.inherits {
                if !roles.contains_key(parent) {
                    problems.push((
                        format!("authz.roles.{name}.inherits"),
                        format!(
                            "{parent:?} is not a role; the roles are {:?}",
                            roles.keys().collect::<Vec<_>>()
                        ),
                    ));
                }
            }
            own.insert(name.as_str(), grants);
        }
        if let Some(cycle) = find_cycle(roles) {
            problems.push((
                format!("authz.roles.{}.inherits", cycle[0]),
                format!(
                    "roles inherit in a cycle: {}; remove one of these inherits",
                    cycle.join(" → ")
                ),
            ));
        }
        for (user, held) in users {
            for role in held {
                if !roles.contains_key(role) {
                    problems.push((
                        format!("authz.users.{user}"),
                        format!(
                            "{role:?} is not a role; the roles are {:?}",
                            roles.keys().collect::<Vec<_>>()
                        ),
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        // Flatten: a role's effective grants are its own and those of every role it reaches.
        let mut compiled = Self::default();
        for name in roles.keys() {
            let mut effective = Grants::default();
            for reached in reachable(roles, name) {
                if let Some(grants) = own.get(reached) {
                    effective.merge(grants);
                }
            }
            compiled.roles.insert(name.as_str().into(), effective);
        }
        for (user, held) in users {
            compiled.users.insert(
                user.as_str().into(),
                held.iter().map(|r| r.as_str().into()).collect(),
            );
        }
        Ok(compiled)
    }

    /// Whether any of `roles`, or the roles the configuration gives `user`, allows `wanted`.
    /// Unknown roles allow nothing.
    pub(crate) fn allows<'a>(
        &self,
        user: &str,
        roles: impl IntoIterator<Item = &'a str>,
        wanted: Wanted,
    ) -> bool {
        let allowed = |role: &str| self.roles.get(role).is_some_and(|g| g.allows(wanted));
        roles.into_iter().any(allowed)
            || self
                .users
                .get(user)
                .is_some_and(|held| held.iter().any(|r| allowed(r)))
    }

    /// Whether any role grants `wanted`.
    pub(crate) fn grantable(&self, wanted: Wanted) -> bool {
        self.roles.values().any(|g| g.allows(wanted))
    }

    /// The roles whose effective grants are empty (they allow nothing).
    pub(crate) fn empty_roles(&self) -> Vec<&str> {
        let mut empty: Vec<&str> = self
            .roles
            .iter()
            .filter(|(_, g)| g.is_empty())
            .map(|(name, _)| &**name)
            .collect();
        empty.sort_unstable();
        empty
    }
}

/// Every role `start` reaches through `inherits`, itself included (the graph is acyclic here).
pub(crate) fn reachable<'a>(
    roles: &'a BTreeMap<String, RoleConfig>,
    start: &'a str,
) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![start];
    while let Some(name) = stack.pop() {
        if !seen.insert(name) {
            continue;
        }
        if let Some(role) = roles.get(name) {
            stack.extend(role.inherits.iter().map(String::as_str));
        }
    }
    seen
}

/// A cycle of `inherits`, as the roles on it (the first repeated at the end), if there is one.
fn find_cycle(roles: &BTreeMap<String, RoleConfig>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'a>(
        roles: &'a BTreeMap<String, RoleConfig>,
        name: &'a str,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(name) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle: Vec<String> = path[from..].iter().map(|n| (*n).to_owned()).collect();
                cycle.push(name.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(name, Mark::Open);
        path.push(name);
        if let Some(role) = roles.get(name) {
            for parent in &role.inherits {
                if roles.contains_key(parent)
                    && let Some(cycle) = visit(roles, parent, marks, path)
                {
                    return Some(cycle);
                }
            }
        }
        path.pop();
        marks.insert(name, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for name in roles.keys() {
        let mut path = Vec::new();
        if let Some(cycle) = visit(roles, name, &mut marks, &mut path) {
            return Some(cycle);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn role(inherits: &[&str], permissions: &[&str]) -> RoleConfig {
        RoleConfig {
            inherits: inherits.iter().map(|s| (*s).to_owned()).collect(),
            permissions: permissions.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn demo() -> (Names, Compiled) {
        let names = Names::default();
        let roles = BTreeMap::from([
            ("viewer".to_owned(), role(&[], &["orders:read"])),
            ("admin".to_owned(), role(&["viewer"], &["orders:*"])),
            ("auditor".to_owned(), role(&[], &["*:read"])),
            ("root".to_owned(), role(&[], &["*:*"])),
        ]);
        let users = BTreeMap::from([("demo".to_owned(), vec!["viewer".to_owned()])]);
        let compiled = Compiled::new(&names, &roles, &users).unwrap();
        (names, compiled)
    }

    #[test]
    fn wildcards_inheritance_and_configured_users_decide() {
        let (names, p) = demo();
        let w = |s: &str| Wanted::parse(&names, s).unwrap();
        assert!(p.allows("x", ["viewer"], w("orders:read")));
        assert!(!p.allows("x", ["viewer"], w("orders:write")));
        assert!(p.allows("x", ["admin"], w("orders:write")));
        assert!(p.allows("x", ["admin"], w("orders:read")));
        assert!(!p.allows("x", ["admin"], w("users:read")));
        assert!(p.allows("x", ["auditor"], w("users:read")));
        assert!(!p.allows("x", ["auditor"], w("users:write")));
        assert!(p.allows("x", ["root"], w("anything:goes")));
        assert!(!p.allows("x", ["nobody"], w("orders:read")));
        // From the configuration: demo is a viewer, whatever the host says.
        assert!(p.allows("demo", [], w("orders:read")));
        assert!(!p.allows("demo", [], w("orders:write")));
    }

    #[test]
    fn bad_permissions_unknown_roles_and_cycles_are_refused_naming_the_key() {
        let names = Names::default();
        let roles = BTreeMap::from([
            ("a".to_owned(), role(&["b"], &["orders"])),
            ("b".to_owned(), role(&["c"], &[])),
            ("c".to_owned(), role(&["a"], &["x:y:z"])),
            ("d".to_owned(), role(&["ghost"], &[])),
        ]);
        let users = BTreeMap::from([("u".to_owned(), vec!["nope".to_owned()])]);
        let problems = Compiled::new(&names, &roles, &users).unwrap_err();
        let text = format!("{problems:?}");
        assert!(text.contains("authz.roles.a.permissions"), "{text}");
        assert!(text.contains("authz.roles.c.permissions"), "{text}");
        assert!(text.contains("authz.roles.d.inherits"), "{text}");
        assert!(text.contains("a → b → c → a"), "{text}");
        assert!(text.contains("authz.users.u"), "{text}");
        assert!(Wanted::parse(&names, "orders:*").is_err());
        assert!(Wanted::parse(&names, "orders").is_err());
    }

    /// The straightforward evaluator the compiled form must agree with: walk the inheritance
    /// graph from each role, and match every granted pattern part by part.
    fn reference(
        roles: &BTreeMap<String, RoleConfig>,
        held: &[String],
        resource: &str,
        action: &str,
    ) -> bool {
        held.iter().any(|start| {
            roles.contains_key(start)
                && reachable(roles, start).into_iter().any(|name| {
                    roles[name].permissions.iter().any(|p| {
                        let (r, a) = p.split_once(':').unwrap();
                        (r == "*" || r == resource) && (a == "*" || a == action)
                    })
                })
        })
    }

    proptest::proptest! {
        #[test]
        fn the_compiled_form_decides_as_the_reference_evaluator(
            // Role i may inherit only roles of a higher index: an acyclic graph.
            edges in proptest::collection::vec(proptest::collection::vec(0usize..8, 0..3), 8),
            grants in proptest::collection::vec(
                proptest::collection::vec((0usize..4, 0usize..4), 0..4), 8),
            held in proptest::collection::vec(0usize..9, 0..3),
            asks in proptest::collection::vec((0usize..3, 0usize..3), 1..8),
        ) {
            let resources = ["orders", "users", "reports", "*"];
            let actions = ["read", "write", "delete", "*"];
            let roles: BTreeMap<String, RoleConfig> = (0..8)
                .map(|i| {
                    let inherits = edges[i].iter().filter(|j| **j > i).map(|j| format!("r{j}")).collect();
                    let permissions = grants[i]
                        .iter()
                        .map(|(r, a)| format!("{}:{}", resources[*r], actions[*a]))
                        .collect();
                    (format!("r{i}"), RoleConfig { inherits, permissions })
                })
                .collect();
            // Index 8 names a role that does not exist.
            let held: Vec<String> = held.iter().map(|i| format!("r{i}")).collect();
            let names = Names::default();
            let compiled = Compiled::new(&names, &roles, &BTreeMap::new()).unwrap();
            for (r, a) in asks {
                let wanted = Wanted::parse(&names, &format!("{}:{}", resources[r], actions[a])).unwrap();
                proptest::prop_assert_eq!(
                    compiled.allows("someone", held.iter().map(String::as_str), wanted),
                    reference(&roles, &held, resources[r], actions[a]),
                    "{:?} asking {}:{} of {:?}", held, resources[r], actions[a], roles
                );
            }
        }
    }
}
