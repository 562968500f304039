//! Routing: which collector groups each record goes to.
//!
//! A record goes to the union of the groups of every `[[routes]]` entry that
//! matches it, and to `routing.default` when none does. A route matches when
//! every key of its `match` table matches (AND); a key matches when one of
//! the record's values of that field is one of the listed values (OR). A
//! route without `match` matches every record.
//!
//! [`Router::try_new`] compiles the config once; [`Router::route`] runs per
//! record in the audit stage and returns a bit mask over the groups.

pub mod field;
mod matcher;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, fmt};

use lbwitness_trail::record::Record;
use serde::Deserialize;

use self::matcher::Matcher;
pub use self::{
    field::{Field, Value, Values},
    matcher::{MatchValue, MatchValues},
};

/// The most groups a router handles: one bit each in a `u64` mask.
pub const MAX_GROUPS: usize = 64;

/// One `[[routes]]` entry as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Names the route in errors and warnings; unique.
    pub name: String,
    /// Groups the matching records go to (fan-out to every one).
    pub groups: Vec<String>,
    /// Dotted field name to accepted values. Empty: every record matches.
    #[serde(default, rename = "match")]
    pub matches: BTreeMap<String, MatchValues>,
}

/// `[routing]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingFile {
    /// Groups for records no route matches.
    pub default: Vec<String>,
}

/// Why a routing config was refused. Each message names the route and key.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// More groups than mask bits.
    #[error(
        "{count} collector groups configured; at most {MAX_GROUPS} are supported: merge groups"
    )]
    TooManyGroups {
        /// How many.
        count: usize,
    },
    /// Two groups share a name.
    #[error("collector group `{name}` is defined twice; give each group its own name")]
    DuplicateGroup {
        /// The name.
        name: String,
    },
    /// Two routes share a name.
    #[error("route `{name}` is defined twice; give each [[routes]] entry its own name")]
    DuplicateRoute {
        /// The name.
        name: String,
    },
    /// A route with `groups = []`.
    #[error("route `{route}`: `groups` is empty; name at least one collector group")]
    NoGroups {
        /// The route.
        route: String,
    },
    /// `routing.default` is empty or missing.
    #[error(
        "`routing.default` is empty: records no route matches would go nowhere; \
         name at least one collector group, e.g. default = [\"archive\"]"
    )]
    NoDefault,
    /// A group name that no group has.
    #[error("{place}: no collector group is named `{group}`; defined groups: {known}")]
    UnknownGroup {
        /// `route \`x\`` or `routing.default`.
        place: String,
        /// The name as written.
        group: String,
        /// The defined names, comma-separated.
        known: String,
    },
    /// A match key that is not a routable field.
    #[error("route `{route}`: match key {source}")]
    UnknownField {
        /// The route.
        route: String,
        /// The key and the supported names.
        source: field::UnknownField,
    },
    /// `key = []`, which could never match.
    #[error(
        "route `{route}`: match key `{key}` has no values, so the route could never match; list at least one value or remove the key"
    )]
    EmptyMatch {
        /// The route.
        route: String,
        /// The key.
        key: String,
    },
    /// A value the field cannot hold.
    #[error("route `{route}`: match key `{key}`: {value} {problem}")]
    BadValue {
        /// The route.
        route: String,
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// What is wrong and what is expected.
        problem: String,
    },
}

/// A match value no lbwitness record carries: the key can never match. Not
/// an error (a value might be meant for a later version), but worth a log
/// line at startup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownValue {
    /// The route.
    pub route: String,
    /// The field.
    pub field: Field,
    /// The value as written.
    pub value: String,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = self.field.vocabulary().unwrap_or_default().join(", ");
        write!(
            f,
            "route `{}`: no record lbwitness writes has {} = {:?}, so this value never matches; \
             check the spelling (values written: {known})",
            self.route, self.field, self.value
        )
    }
}

/// One compiled route.
#[derive(Clone, Debug)]
struct Route {
    /// Bits of its groups.
    mask: u64,
    /// Every one must match.
    matchers: Box<[Matcher]>,
}

/// Compiled routing: decides each record's groups without allocating.
#[derive(Clone, Debug)]
pub struct Router {
    routes: Box<[Route]>,
    default: u64,
    warnings: Vec<UnknownValue>,
}

/// The mask of `names` among `groups`, or the first unknown name.
fn mask_of(place: &str, names: &[String], groups: &[String]) -> Result<u64, RouteError> {
    names.iter().try_fold(0u64, |mask, name| {
        let bit =
            groups
                .iter()
                .position(|g| g == name)
                .ok_or_else(|| RouteError::UnknownGroup {
                    place: place.to_owned(),
                    group: name.clone(),
                    known: groups.join(", "),
                })?;
        Ok(mask | 1 << bit)
    })
}

fn compile(
    r: &RouteFile,
    groups: &[String],
    warnings: &mut Vec<UnknownValue>,
) -> Result<Route, RouteError> {
    if r.groups.is_empty() {
        return Err(RouteError::NoGroups {
            route: r.name.clone(),
        });
    }
    let mask = mask_of(&format!("route `{}`", r.name), &r.groups, groups)?;
    let mut matchers = Vec::with_capacity(r.matches.len());
    for (key, MatchValues(values)) in &r.matches {
        let field: Field = key.parse().map_err(|source| RouteError::UnknownField {
            route: r.name.clone(),
            source,
        })?;
        if values.is_empty() {
            return Err(RouteError::EmptyMatch {
                route: r.name.clone(),
                key: key.clone(),
            });
        }
        let m =
            Matcher::compile(field, values).map_err(|(value, problem)| RouteError::BadValue {
                route: r.name.clone(),
                key: key.clone(),
                value,
                problem,
            })?;
        if let Some(vocabulary) = field.vocabulary() {
            for v in values {
                let text = match v {
                    MatchValue::Str(s) => s.clone(),
                    MatchValue::Int(i) => i.to_string(),
                };
                if !vocabulary.contains(&text.as_str()) {
                    warnings.push(UnknownValue {
                        route: r.name.clone(),
                        field,
                        value: text,
                    });
                }
            }
        }
        matchers.push(m);
    }
    Ok(Route {
        mask,
        matchers: matchers.into(),
    })
}

impl Router {
    /// Compiles `routes` over `groups` (group `i` is bit `i` of a mask).
    /// Refuses more than [`MAX_GROUPS`] groups, duplicate group or route
    /// names, unknown groups or fields, empty lists, values a field cannot
    /// hold, and an empty default.
    pub fn try_new(
        routes: &[RouteFile],
        routing: &RoutingFile,
        groups: &[String],
    ) -> Result<Router, RouteError> {
        if groups.len() > MAX_GROUPS {
            return Err(RouteError::TooManyGroups {
                count: groups.len(),
            });
        }
        for (i, g) in groups.iter().enumerate() {
            if groups[..i].contains(g) {
                return Err(RouteError::DuplicateGroup { name: g.clone() });
            }
        }
        let mut warnings = Vec::new();
        let mut compiled = Vec::with_capacity(routes.len());
        for (i, r) in routes.iter().enumerate() {
            if routes[..i].iter().any(|o| o.name == r.name) {
                return Err(RouteError::DuplicateRoute {
                    name: r.name.clone(),
                });
            }
            compiled.push(compile(r, groups, &mut warnings)?);
        }
        if routing.default.is_empty() {
            return Err(RouteError::NoDefault);
        }
        let default = mask_of("routing.default", &routing.default, groups)?;
        Ok(Router {
            routes: compiled.into(),
            default,
            warnings,
        })
    }

    /// The groups for `r`: bit `i` set means deliver to `groups[i]`. Never 0.
    #[inline]
    pub fn route(&self, r: &Record) -> u64 {
        let mut mask = 0;
        for route in &*self.routes {
            // A route whose groups are all chosen already cannot change the
            // result: skip its matchers.
            if route.mask & !mask != 0 && route.matchers.iter().all(|m| m.matches(r)) {
                mask |= route.mask;
            }
        }
        if mask == 0 { self.default } else { mask }
    }

    /// The mask for records no route matches.
    pub fn default_mask(&self) -> u64 {
        self.default
    }

    /// Match values no record carries (log them at startup).
    pub fn warnings(&self) -> &[UnknownValue] {
        &self.warnings
    }
}
