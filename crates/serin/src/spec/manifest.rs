//! A Rollout resource (`apiVersion: serin.dev/v1alpha1`, `kind: Rollout`)
//! read by the rollout file's own checks, from either of its two forms:
//!
//! - a manifest file, as `serin run --check` reads rollout files: every
//!   problem at its line and column in the manifest, all at once, with the
//!   rollout file's messages;
//! - the `spec` the API server holds (JSON, no lines): the same checks,
//!   each message naming its field from the resource's root
//!   (`spec.analysis.errorRate.max: expected a percentage ...`).
//!
//! The spec is the rollout file without `name` (that is `metadata.name`),
//! and `traffic.kubernetes.namespace` defaults to the resource's namespace.
//! For the API server's form, the spec is written out as JSON text (JSON is
//! YAML) one field per line, each line remembering the field it holds; the
//! checker's locations are then turned back into field paths. So there is
//! one set of checks, and no second copy to drift.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::kubernetes::NameRule;
use super::raw::{RawRollout, present};
use super::{Checker, Problem, Rollout, SpecError, problem_of};

/// The API group of serin's custom resources.
pub const API_GROUP: &str = "serin.dev";
/// A Rollout resource's `apiVersion`.
pub const API_VERSION: &str = "serin.dev/v1alpha1";
/// A Rollout resource's `kind`.
pub const KIND: &str = "Rollout";

/// The namespace of a resource that names none (as `kubectl` would use
/// for a context without one).
const DEFAULT_NAMESPACE: &str = "default";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawManifest {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    metadata: Spanned<RawMetadata>,
    #[serde(default, deserialize_with = "present")]
    spec: Option<Spanned<Option<RawRollout>>>,
    /// Written by the controller; a manifest copied from the cluster may
    /// hold it, and nothing here reads it.
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<IgnoredAny>,
}

/// The metadata serin reads; labels, annotations and the rest are the
/// API server's business.
#[derive(Deserialize)]
struct RawMetadata {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    namespace: Option<Spanned<String>>,
}

/// Whether a document is a resource rather than a rollout file: it has an
/// `apiVersion` or a `kind` at its top.
pub(super) fn is_manifest(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default, rename = "apiVersion")]
        api_version: Option<IgnoredAny>,
        #[serde(default)]
        kind: Option<IgnoredAny>,
    }
    serde_saphyr::from_str::<Probe>(text).is_ok_and(|p| p.api_version.is_some() || p.kind.is_some())
}

/// A manifest file's text: the rollout it describes, or every problem at
/// its line and column.
pub(super) fn parse(text: &str, origin: &str) -> Result<Rollout, SpecError> {
    let raw: Spanned<RawManifest> = serde_saphyr::from_str(text).map_err(|e| SpecError {
        origin: origin.to_string(),
        problems: vec![problem_of(&e)],
    })?;
    let root_at = raw.referenced;
    let raw = raw.value;
    let mut check = Checker {
        name_field: Some("metadata.name"),
        ..Checker::default()
    };
    if raw.api_version.value != API_VERSION {
        check.at(
            &raw.api_version.referenced,
            format!(
                "apiVersion: expected {API_VERSION} (a serin Rollout), got `{}`",
                raw.api_version.value
            ),
        );
    }
    if raw.kind.value != KIND {
        check.at(
            &raw.kind.referenced,
            format!("kind: expected {KIND}, got `{}`", raw.kind.value),
        );
    }
    let metadata = raw.metadata.value;
    let name = metadata.name;
    if name.is_none() {
        check.at(
            &raw.metadata.referenced,
            "metadata.name: expected the Rollout's name (1 to 63 characters of a-z, 0-9 and -)",
        );
    }
    if let Some(ns) = &metadata.namespace
        && !NameRule::Label.accepts(&ns.value, 63)
    {
        check.at(
            &ns.referenced,
            format!(
                "metadata.namespace: expected {}, got `{}`",
                NameRule::Label.expected(63),
                ns.value
            ),
        );
    }
    check.namespace = Some(
        metadata
            .namespace
            .map_or_else(|| DEFAULT_NAMESPACE.to_string(), |n| n.value),
    );
    let spec = match raw.spec {
        Some(Spanned {
            value: Some(spec),
            referenced,
            ..
        }) => Some((spec, referenced)),
        Some(Spanned { referenced, .. }) => {
            check.at(&referenced, SPEC_EXPECTED);
            None
        }
        None => {
            check.at(&root_at, SPEC_EXPECTED);
            None
        }
    };
    let rollout = spec.and_then(|(spec, _)| {
        if let Some(n) = &spec.name {
            check.at(&n.referenced, NAME_IN_SPEC);
        }
        check.rollout(name, spec)
    });
    check.finish(rollout, origin)
}

const SPEC_EXPECTED: &str =
    "spec: expected the rollout's settings (stable, canary, traffic, steps, analysis, ...)";
const NAME_IN_SPEC: &str =
    "spec.name: a Rollout's name is its metadata.name; remove name from spec";

/// A Rollout's spec as the API server holds it (JSON), checked as a
/// rollout file is: the rollout, or every problem, each naming its field
/// (`spec.steps[2].setWeight: ...`). `namespace` is the resource's; it is
/// `traffic.kubernetes.namespace` when the spec gives none.
pub fn check_resource(name: &str, namespace: &str, spec: &Value) -> Result<Rollout, SpecError> {
    let origin = format!("Rollout {namespace}/{name}");
    let fail = |problems: Vec<Problem>| SpecError {
        origin: origin.clone(),
        problems,
    };
    let Some(fields) = spec.as_object() else {
        return Err(fail(vec![unlocated(format!(
            "spec: expected a mapping of the rollout's settings, got {}",
            kind_of(spec)
        ))]));
    };
    let mut early = Vec::new();
    let mut text = LocatedJson::default();
    text.line(0, "spec", "{".to_string());
    text.member(
        1,
        "metadata.name",
        "\"name\": ",
        &Value::String(name.to_string()),
        true,
    );
    let shown: Vec<(&String, &Value)> = fields
        .iter()
        .filter(|(k, _)| {
            // The API server prunes it (the schema has no such field); a
            // spec read some other way is told, as a manifest would be.
            if k.as_str() == "name" {
                early.push(unlocated(NAME_IN_SPEC.to_string()));
                false
            } else {
                true
            }
        })
        .collect();
    for (i, (key, value)) in shown.iter().enumerate() {
        let prefix = format!("{}: ", Value::String((*key).clone()));
        let path = format!("spec.{key}");
        text.member(1, &path, &prefix, value, i + 1 < shown.len());
    }
    text.line(0, "spec", "}".to_string());

    let raw: Spanned<RawRollout> = serde_saphyr::from_str(&text.text)
        .map_err(|e| fail(vec![text.name_field(problem_of(&e))]))?;
    let mut check = Checker {
        name_field: Some("metadata.name"),
        namespace: Some(namespace.to_string()),
        ..Checker::default()
    };
    check.problems = early;
    let raw = raw.value;
    let name = raw.name.clone();
    let rollout = check.rollout(name, raw);
    check.finish(rollout, &origin).map_err(|mut e| {
        e.problems = e.problems.into_iter().map(|p| text.name_field(p)).collect();
        e
    })
}

fn unlocated(message: String) -> Problem {
    Problem {
        line: 0,
        column: 0,
        message,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// JSON text with one field or list item per line, and the field path
/// each line holds.
#[derive(Default)]
struct LocatedJson {
    text: String,
    /// `paths[n]`: the field on line n + 1.
    paths: Vec<String>,
}

impl LocatedJson {
    fn line(&mut self, indent: usize, path: &str, content: String) {
        for _ in 0..indent {
            self.text.push_str("  ");
        }
        self.text.push_str(&content);
        self.text.push('\n');
        self.paths.push(path.to_string());
    }

    /// `prefix` (`"key": `, or nothing in a list) and the value, on lines
    /// of their own.
    fn member(&mut self, indent: usize, path: &str, prefix: &str, value: &Value, comma: bool) {
        let comma = if comma { "," } else { "" };
        match value {
            Value::Object(map) if !map.is_empty() => {
                self.line(indent, path, format!("{prefix}{{"));
                for (i, (k, v)) in map.iter().enumerate() {
                    let key = format!("{}: ", Value::String(k.clone()));
                    self.member(
                        indent + 1,
                        &format!("{path}.{k}"),
                        &key,
                        v,
                        i + 1 < map.len(),
                    );
                }
                self.line(indent, path, format!("}}{comma}"));
            }
            Value::Array(items) if !items.is_empty() => {
                self.line(indent, path, format!("{prefix}["));
                for (i, v) in items.iter().enumerate() {
                    self.member(
                        indent + 1,
                        &format!("{path}[{i}]"),
                        "",
                        v,
                        i + 1 < items.len(),
                    );
                }
                self.line(indent, path, format!("]{comma}"));
            }
            scalar => self.line(indent, path, format!("{prefix}{scalar}{comma}")),
        }
    }

    /// A problem found in the text, told by the field it is about instead
    /// of a line no one can see.
    fn name_field(&self, p: Problem) -> Problem {
        let path = usize::try_from(p.line)
            .ok()
            .and_then(|l| l.checked_sub(1))
            .and_then(|l| self.paths.get(l))
            .map_or("spec", String::as_str);
        unlocated(at_path(path, &p.message))
    }
}

/// A message that starts with its field gets the field's whole path: the
/// path of its line when the field is the end of it (a step's `pause: ...`
/// is `spec.steps[2].pause`), else the field from the spec's root
/// (`traffic.listen: ...`, told at the `traffic` section, is
/// `spec.traffic.listen`). Any other message is put after the field its
/// line holds.
fn at_path(path: &str, message: &str) -> String {
    if let Some((head, rest)) = message.split_once(": ")
        && is_field_path(head)
    {
        return if head.starts_with("metadata.") || head.starts_with("spec.") || head == "spec" {
            message.to_string()
        } else if path.ends_with(&format!(".{head}")) {
            format!("{path}: {rest}")
        } else {
            format!("spec.{head}: {rest}")
        };
    }
    format!("{path}: {message}")
}

fn is_field_path(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '[' | ']'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(e: SpecError) -> Vec<String> {
        e.problems.into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn an_api_spec_names_the_field_of_each_problem() {
        let spec = json!({
            "stable": {"version": "v1"},
            "canary": {"version": "v2"},
            "traffic": {"listen": "127.0.0.1:8080"},
            "steps": [{"setWeight": 5}, {"setWeight": 500}],
            "analysis": {"errorRate": {"max": "500%"}},
        });
        let e = check_resource("shop", "default", &spec).unwrap_err();
        assert_eq!(e.origin, "Rollout default/shop");
        let m = messages(e);
        // serde stops at the first value it refuses, as for a file (the
        // fields come in the API server's order: by name).
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("spec.analysis.errorRate.max: expected a percentage"),
            "{m:?}"
        );
        let mut steps_only = spec.clone();
        steps_only.as_object_mut().unwrap().remove("analysis");
        let m = messages(check_resource("shop", "default", &steps_only).unwrap_err());
        assert!(
            m[0].starts_with("spec.steps[1].setWeight: expected a weight"),
            "{m:?}"
        );
    }

    #[test]
    fn checker_messages_get_the_resource_root_and_all_come_at_once() {
        let spec = json!({
            "stable": {"version": "v1", "upstream": "http://127.0.0.1:9001"},
            "canary": {"version": "v1", "upstream": "http://127.0.0.1:9001"},
            "traffic": {"listen": "nowhere"},
        });
        let m = messages(check_resource("Bad_Name", "shop", &spec).unwrap_err());
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(m[0].starts_with("metadata.name: expected 1 to 63"), "{m:?}");
        assert!(
            m[1].starts_with("spec.canary.upstream: expected a server other"),
            "{m:?}"
        );
        assert!(
            m[2].starts_with("spec.canary.version: expected a version other than stable's"),
            "{m:?}"
        );
        assert!(
            m[3].starts_with("spec.traffic.listen: expected an address"),
            "{m:?}"
        );
    }

    #[test]
    fn an_unknown_field_is_named_with_its_path() {
        let spec = json!({
            "stable": {"version": "v1"},
            "canary": {"version": "v2"},
            "analysis": {"errorRate": {"max": "5%", "maximum": "6%"}},
        });
        let m = messages(check_resource("shop", "default", &spec).unwrap_err());
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("spec.analysis.errorRate.maximum: unknown field `maximum`"),
            "{m:?}"
        );
    }

    #[test]
    fn the_namespace_defaults_to_the_resources_and_name_is_metadatas() {
        let spec = json!({
            "stable": {"version": "v1"},
            "canary": {"version": "v2"},
            "traffic": {"provider": "gateway-api",
                        "kubernetes": {"deployment": "checkout", "httpRoute": "checkout"}},
            "analysis": {"prometheus": {"address": "http://prometheus:9090"}},
        });
        let r = check_resource("checkout", "shop", &spec).unwrap();
        assert_eq!(r.name, "checkout");
        assert_eq!(r.traffic.kubernetes.unwrap().namespace, "shop");
        let mut with_name = spec.clone();
        with_name["name"] = json!("other");
        let m = messages(check_resource("checkout", "shop", &with_name).unwrap_err());
        assert_eq!(m, vec![NAME_IN_SPEC.to_string()]);
    }

    #[test]
    fn a_manifest_file_is_checked_at_its_own_lines() {
        let text = concat!(
            "apiVersion: serin.dev/v1\n",
            "kind: Rollout\n",
            "metadata:\n",
            "  name: checkout\n",
            "  namespace: Shop\n",
            "  labels: {team: a}\n",
            "spec:\n",
            "  name: checkout\n",
            "  stable: {version: v1, upstream: http://127.0.0.1:9001}\n",
            "  canary: {version: v2, upstream: http://127.0.0.1:9002}\n",
            "  traffic: {listen: nowhere}\n",
        );
        let e = super::super::parse(text, "r.yaml").unwrap_err();
        let at: Vec<(u64, String)> = e
            .problems
            .iter()
            .map(|p| (p.line, p.message.clone()))
            .collect();
        assert_eq!(at.len(), 4, "{at:?}");
        assert_eq!(at[0].0, 1);
        assert!(
            at[0]
                .1
                .starts_with("apiVersion: expected serin.dev/v1alpha1")
        );
        assert_eq!(at[1].0, 5);
        assert!(
            at[1]
                .1
                .starts_with("metadata.namespace: expected a name of lowercase")
        );
        assert_eq!(at[2], (8, NAME_IN_SPEC.to_string()));
        assert_eq!(at[3].0, 11);
        assert!(at[3].1.starts_with("traffic.listen: expected an address"));
    }
}
