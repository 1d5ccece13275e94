//! [`ComponentId`]: which component, typed. The only place that turns a
//! component's id into text (`postgres.main`, `docker.image.web:latest`,
//! `git`) and back.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{kind_of_prefix, Kind, KINDS};

/// A component of a stack: its kind and its name within the kind.
///
/// Ordered and compared by its text form, so maps keyed by it serialise in
/// the same order as the manifests written before this type existed.
#[derive(Clone)]
pub struct ComponentId {
    prefix: &'static str,
    name: String,
    text: String,
}

impl ComponentId {
    /// The component `name` of `kind`; a singleton kind (git) ignores it.
    #[must_use]
    pub fn new(kind: &'static dyn Kind, name: &str) -> Self {
        let prefix = kind.prefix();
        let (name, text) = if kind.singleton() {
            (String::new(), prefix.to_string())
        } else {
            (name.to_string(), format!("{prefix}.{name}"))
        };
        Self { prefix, name, text }
    }

    /// Parses `postgres.main`, `docker.image.web:latest`, `git`, …: the
    /// longest registered kind prefix wins (`docker.image.x` is an image,
    /// never a kind `docker`).
    pub fn parse(text: &str) -> Result<Self, UnknownComponent> {
        let kind = KINDS
            .iter()
            .filter(|k| {
                let p = k.prefix();
                if k.singleton() {
                    text == p
                } else {
                    text.len() > p.len() + 1
                        && text.starts_with(p)
                        && text.as_bytes()[p.len()] == b'.'
                }
            })
            .max_by_key(|k| k.prefix().len())
            .ok_or_else(|| UnknownComponent(text.to_string()))?;
        let name = if kind.singleton() {
            ""
        } else {
            &text[kind.prefix().len() + 1..]
        };
        Ok(Self::new(*kind, name))
    }

    /// The kind.
    #[must_use]
    pub fn kind(&self) -> &'static dyn Kind {
        kind_of_prefix(self.prefix).expect("a ComponentId is built from a registered kind")
    }

    /// The kind's id prefix, e.g. `docker.volume`.
    #[must_use]
    pub fn prefix(&self) -> &'static str {
        self.prefix
    }

    /// The name within the kind (the config key, image reference, volume
    /// name); empty for a singleton kind.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text form, e.g. `postgres.main`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `--only` selectors pick this component: a selector names a
    /// component (`postgres.main`) or a group by prefix (`postgres`,
    /// `docker`); no selector picks everything.
    #[must_use]
    pub fn selected_by(&self, only: &[String]) -> bool {
        only.is_empty() || only.iter().any(|s| selects(s, &self.text))
    }
}

/// Whether selector `s` picks the component whose id text is `id`.
fn selects(s: &str, id: &str) -> bool {
    id == s || (id.len() > s.len() && id.starts_with(s) && id.as_bytes()[s.len()] == b'.')
}

/// A component id whose kind no registered kind has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownComponent(pub String);

impl fmt::Display for UnknownComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<&str> = KINDS.iter().map(|k| k.prefix()).collect();
        write!(
            f,
            "`{}` is not a component id (kinds: {})",
            self.0,
            kinds.join(", ")
        )
    }
}

impl std::error::Error for UnknownComponent {}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ComponentId({})", self.text)
    }
}

impl PartialEq for ComponentId {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for ComponentId {}

impl PartialOrd for ComponentId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ComponentId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl std::hash::Hash for ComponentId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl std::borrow::Borrow<str> for ComponentId {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl PartialEq<str> for ComponentId {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl Serialize for ComponentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ComponentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for ComponentId {
    type Err = UnknownComponent;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip_and_the_longest_prefix_wins() {
        for text in [
            "postgres.main",
            "redis.cache",
            "docker.image.registry.local:5000/web:v1.2",
            "docker.volume.shop_uploads",
            "git",
            "paths.media",
        ] {
            let id = ComponentId::parse(text).unwrap();
            assert_eq!(id.to_string(), text);
            let back: ComponentId =
                serde_json::from_str(&serde_json::to_string(&id).unwrap()).expect("round trip");
            assert_eq!(back, id);
        }
        let img = ComponentId::parse("docker.image.web:latest").unwrap();
        assert_eq!(img.prefix(), "docker.image");
        assert_eq!(img.name(), "web:latest");
        assert_eq!(ComponentId::parse("git").unwrap().name(), "");
    }

    #[test]
    fn unknown_kinds_and_empty_names_are_refused() {
        for text in [
            "",
            "postgres",
            "postgres.",
            "oracle.main",
            "docker.x",
            "git.x",
            "gitx",
        ] {
            let err = ComponentId::parse(text).expect_err(text);
            assert!(err.to_string().contains("not a component id"), "{err}");
        }
    }

    #[test]
    fn selectors_pick_by_whole_id_or_dotted_prefix() {
        let id = ComponentId::parse("docker.image.web:latest").unwrap();
        for s in ["docker", "docker.image", "docker.image.web:latest"] {
            assert!(id.selected_by(&[s.to_string()]), "{s}");
        }
        for s in ["dock", "docker.image.web", "postgres"] {
            assert!(!id.selected_by(&[s.to_string()]), "{s}");
        }
        assert!(id.selected_by(&[]));
    }

    #[test]
    fn order_is_the_text_order() {
        let mut ids: Vec<ComponentId> = ["paths.a", "docker.volume.v", "git", "postgres.main"]
            .iter()
            .map(|t| ComponentId::parse(t).unwrap())
            .collect();
        ids.sort();
        let texts: Vec<&str> = ids.iter().map(ComponentId::as_str).collect();
        assert_eq!(
            texts,
            ["docker.volume.v", "git", "paths.a", "postgres.main"]
        );
    }
}
