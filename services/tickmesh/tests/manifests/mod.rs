//! The manifests as they would be applied: an overlay rendered with
//! `kubectl kustomize` (which deploy/k8s-check.sh and deploy/test.sh install)
//! and read into JSON values by a reader of the YAML kustomize writes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};

pub fn k8s(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../k8s")
        .join(path)
}

/// The objects of `kubectl kustomize k8s/<overlay>`, or `None` (the test
/// skips, saying so) when kubectl is not installed, unless
/// TICKMESH_TEST_REQUIRE_KUBECTL is set (./deploy/test.sh), where it fails.
pub fn render(overlay: &str, test: &str) -> Option<Vec<Value>> {
    let out = match Command::new("kubectl")
        .arg("kustomize")
        .arg(k8s(overlay))
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var_os("TICKMESH_TEST_REQUIRE_KUBECTL").is_some() {
                panic!("kubectl is required here (deploy/tools.sh ensure_kubectl)");
            }
            eprintln!(
                "SKIPPED {test}: kubectl not found (apt-get install kubectl, or run ./deploy/test.sh)"
            );
            return None;
        }
        Err(e) => panic!("running kubectl kustomize {overlay}: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(parse_documents(&String::from_utf8(out.stdout).unwrap()))
}

/// The object of `kind` whose name is `name` (or, for generated ConfigMaps,
/// starts with `name-`).
pub fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| {
            let n = o["metadata"]["name"].as_str().unwrap_or_default();
            o["kind"] == kind
                && (n == name || n.strip_prefix(name).is_some_and(|h| h.starts_with('-')))
        })
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered overlay"))
}

pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
    let kind = kind.to_string();
    objects.iter().filter(move |o| o["kind"] == kind.as_str())
}

/// Where a container's variable comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvSource {
    Value(String),
    ConfigMap { name: String, key: String },
    Secret { name: String, key: String },
    Field(String),
}

/// The `env` of a workload's first container, in order.
pub fn container_env(workload: &Value) -> Vec<(String, EnvSource)> {
    let container = &workload["spec"]["template"]["spec"]["containers"][0];
    let Some(env) = container["env"].as_array() else {
        return Vec::new();
    };
    env.iter()
        .map(|e| {
            let name = e["name"].as_str().expect("env name").to_string();
            let from = &e["valueFrom"];
            let text = |v: &Value| v.as_str().expect("a string").to_string();
            let source = if let Some(v) = e.get("value") {
                EnvSource::Value(scalar_text(v))
            } else if from.get("configMapKeyRef").is_some() {
                let r = &from["configMapKeyRef"];
                EnvSource::ConfigMap {
                    name: text(&r["name"]),
                    key: text(&r["key"]),
                }
            } else if from.get("secretKeyRef").is_some() {
                let r = &from["secretKeyRef"];
                EnvSource::Secret {
                    name: text(&r["name"]),
                    key: text(&r["key"]),
                }
            } else if from.get("fieldRef").is_some() {
                EnvSource::Field(text(&from["fieldRef"]["fieldPath"]))
            } else {
                panic!("{name}: an env source this reader does not know: {e}")
            };
            (name, source)
        })
        .collect()
}

/// A string list (`command`, `args`) of a workload's first container.
pub fn container_list(workload: &Value, key: &str) -> Vec<String> {
    workload["spec"]["template"]["spec"]["containers"][0][key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {}", workload["metadata"]["name"]))
        .iter()
        .map(scalar_text)
        .collect()
}

/// A scalar as the string Kubernetes would see ("1" for 1).
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Reads the YAML `kubectl kustomize` writes: documents separated by `---`,
/// block mappings and sequences (a sequence indented like its key or
/// deeper), plain, quoted and `|` block scalars, and the empty `{}` and
/// `[]`. Anything else (anchors, non-empty flow collections, folded
/// scalars) panics naming the line, so a change in kustomize's output fails
/// loudly instead of being misread.
pub fn parse_documents(text: &str) -> Vec<Value> {
    let mut docs = vec![Vec::new()];
    for (i, raw) in text.lines().enumerate() {
        if raw == "---" {
            docs.push(Vec::new());
            continue;
        }
        let text = raw.trim_start_matches(' ');
        docs.last_mut().unwrap().push(Line {
            number: i + 1,
            indent: raw.len() - text.len(),
            text,
        });
    }
    docs.into_iter()
        .filter_map(|lines| {
            let mut reader = Reader { lines, at: 0 };
            reader.skip_blank();
            let indent = reader.line()?.indent;
            let value = reader.node(indent);
            reader.skip_blank();
            if reader.line().is_some() {
                reader.fail("unexpected");
            }
            Some(value)
        })
        .collect()
}

#[derive(Clone, Copy)]
struct Line<'a> {
    number: usize,
    indent: usize,
    /// The line without its indentation.
    text: &'a str,
}

impl Line<'_> {
    fn blank(&self) -> bool {
        self.text.trim().is_empty() || self.text.starts_with('#')
    }

    fn starts_item(&self) -> bool {
        self.text == "-" || self.text.starts_with("- ")
    }
}

struct Reader<'a> {
    lines: Vec<Line<'a>>,
    at: usize,
}

impl<'a> Reader<'a> {
    fn line(&self) -> Option<Line<'a>> {
        self.lines.get(self.at).copied()
    }

    fn skip_blank(&mut self) {
        while self.line().is_some_and(|l| l.blank()) {
            self.at += 1;
        }
    }

    /// The next non-blank line if it is indented `indent`.
    fn next_at(&mut self, indent: usize) -> Option<Line<'a>> {
        self.skip_blank();
        self.line().filter(|l| l.indent == indent)
    }

    fn fail(&self, what: &str) -> ! {
        let line = self.lines[self.at];
        panic!("yaml line {}: {what}: {:?}", line.number, line.text)
    }

    /// The node starting at the current line, indented `indent`.
    fn node(&mut self, indent: usize) -> Value {
        if self.lines[self.at].starts_item() {
            self.sequence(indent)
        } else {
            self.mapping(indent)
        }
    }

    fn sequence(&mut self, indent: usize) -> Value {
        let mut items = Vec::new();
        while let Some(line) = self.next_at(indent) {
            if line.text == "-" {
                self.at += 1;
                self.skip_blank();
                match self.line() {
                    Some(inner) if inner.indent > indent => {
                        let inner = inner.indent;
                        items.push(self.node(inner));
                    }
                    _ => self.fail("an empty sequence item"),
                }
                continue;
            }
            let Some(rest) = line.text.strip_prefix("- ") else {
                break;
            };
            if rest.starts_with("- ") {
                self.fail("nested inline sequences are not read");
            }
            if key_of(rest).is_some() {
                // "- key: value": a mapping indented past the dash.
                self.lines[self.at] = Line {
                    indent: indent + 2,
                    text: rest,
                    ..line
                };
                items.push(self.mapping(indent + 2));
            } else {
                let value = scalar(rest).unwrap_or_else(|e| self.fail(&e));
                self.at += 1;
                items.push(value);
            }
        }
        Value::Array(items)
    }

    fn mapping(&mut self, indent: usize) -> Value {
        let mut map = Map::new();
        while let Some(line) = self.next_at(indent) {
            if line.starts_item() {
                break;
            }
            let Some((key, rest)) = key_of(line.text) else {
                self.fail("expected `key: value`");
            };
            let value = if rest.is_empty() {
                self.at += 1;
                self.skip_blank();
                match self.line() {
                    // A sequence may sit at its key's indentation.
                    Some(next)
                        if next.indent > indent
                            || (next.indent == indent && next.starts_item()) =>
                    {
                        let inner = next.indent;
                        self.node(inner)
                    }
                    _ => Value::Null,
                }
            } else if let Some(chomp) = rest.strip_prefix('|') {
                self.at += 1;
                self.block(indent, chomp)
            } else {
                let value = scalar(rest).unwrap_or_else(|e| self.fail(&e));
                self.at += 1;
                value
            };
            if map.insert(key.to_string(), value).is_some() {
                panic!("yaml line {}: duplicate key {key}", line.number);
            }
        }
        Value::Object(map)
    }

    /// A `|` block scalar (`chomp`: "", "-" or "+") under a key indented
    /// `indent`.
    fn block(&mut self, indent: usize, chomp: &str) -> Value {
        let mut body = Vec::new();
        let mut inner = None;
        while let Some(line) = self.line() {
            if line.text.trim().is_empty() {
                body.push(String::new());
                self.at += 1;
                continue;
            }
            if line.indent <= indent {
                break;
            }
            let inner = *inner.get_or_insert(line.indent);
            if line.indent < inner {
                self.fail("a block scalar line less indented than its first");
            }
            body.push(format!("{}{}", " ".repeat(line.indent - inner), line.text));
            self.at += 1;
        }
        let text = body.join("\n");
        let kept = text.trim_end_matches('\n');
        Value::String(match chomp {
            "" => format!("{kept}\n"),
            "-" => kept.to_string(),
            "+" => format!("{text}\n"),
            other => panic!("block scalar header |{other} is not read"),
        })
    }
}

/// `key: rest` or `key:` (plain or quoted key); `None` for a scalar.
fn key_of(content: &str) -> Option<(&str, &str)> {
    if let Some(quote @ ('"' | '\'')) = content.chars().next() {
        let end = content[1..].find(quote)? + 1;
        let after = &content[end + 1..];
        let rest = after.strip_prefix(':')?;
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return None;
        }
        return Some((&content[1..end], rest.trim()));
    }
    if let Some(key) = content.strip_suffix(':') {
        return (!key.contains(": ")).then_some((key, ""));
    }
    let (key, rest) = content.split_once(": ")?;
    Some((key, rest.trim()))
}

fn scalar(text: &str) -> Result<Value, String> {
    let text = text.trim();
    Ok(match text {
        "{}" => Value::Object(Map::new()),
        "[]" => Value::Array(Vec::new()),
        "null" | "~" => Value::Null,
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ if text.starts_with('"') => {
            let inner = text
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .ok_or_else(|| format!("unterminated string {text}"))?;
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(c @ ('"' | '\\' | '/')) => out.push(c),
                    other => return Err(format!("escape \\{other:?} is not read in {text}")),
                }
            }
            Value::String(out)
        }
        _ if text.starts_with('\'') => Value::String(
            text.strip_prefix('\'')
                .and_then(|t| t.strip_suffix('\''))
                .ok_or_else(|| format!("unterminated string {text}"))?
                .replace("''", "'"),
        ),
        _ if text.starts_with(['{', '[', '&', '*', '!', '>', '%', '@', '`']) => {
            return Err(format!("{text:?}: not read by this reader"));
        }
        _ => match text.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::String(text.to_string()),
        },
    })
}
