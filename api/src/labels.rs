//! Label selectors: the string syntax of `?labelSelector=` and the object form
//! (`matchLabels` + `matchExpressions`) compile to one list of requirements.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A parsed label selector: every requirement must hold (comma means AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

/// Why a selector could not be parsed; the message follows apimachinery's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct ParseError(String);

impl Selector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// True when the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Parses the string form, e.g. `app=web,tier notin (db),!canary`.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let mut requirements = Vec::new();
        for part in split_top_level(input)? {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(Requirement::parse(part)?);
        }
        Ok(Self { requirements })
    }

    /// Compiles a `metav1.LabelSelector`. An absent selector matches nothing in Kubernetes for
    /// most controllers, so callers decide what `None` means; here an empty one matches all.
    pub fn from_label_selector(sel: &LabelSelector) -> Result<Self, ParseError> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            validate_key(k)?;
            validate_value(v)?;
            requirements.push(Requirement {
                key: k.clone(),
                op: Op::In(vec![v.clone()]),
            });
        }
        for expr in sel.match_expressions.iter().flatten() {
            validate_key(&expr.key)?;
            let values = expr.values.clone().unwrap_or_default();
            let op = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(ParseError(format!(
                        "for 'in', 'notin' operators, values set can't be empty (key {})",
                        expr.key
                    )));
                }
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(ParseError(format!(
                        "values set must be empty for exists and does not exist (key {})",
                        expr.key
                    )));
                }
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(ParseError(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            };
            requirements.push(Requirement {
                key: expr.key.clone(),
                op,
            });
        }
        Ok(Self { requirements })
    }

    /// True when every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches(|k| labels.get(k).map(String::as_str)))
    }

    /// Like [`Selector::matches`], for labels held as a JSON object (stored objects).
    pub fn matches_json(&self, labels: Option<&serde_json::Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
        self.requirements.iter().all(|r| r.matches(get))
    }

    /// The `k=v` pairs this selector requires exactly, for labelling objects it selects.
    pub fn equalities(&self) -> impl Iterator<Item = (&str, &str)> {
        self.requirements.iter().filter_map(|r| match &r.op {
            Op::In(v) if v.len() == 1 => Some((r.key.as_str(), v[0].as_str())),
            _ => None,
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.key;
        match &self.op {
            Op::In(v) if v.len() == 1 => write!(f, "{k}={}", v[0]),
            Op::In(v) => write!(f, "{k} in ({})", v.join(",")),
            Op::NotIn(v) if v.len() == 1 => write!(f, "{k}!={}", v[0]),
            Op::NotIn(v) => write!(f, "{k} notin ({})", v.join(",")),
            Op::Exists => write!(f, "{k}"),
            Op::DoesNotExist => write!(f, "!{k}"),
            Op::Gt(n) => write!(f, "{k}>{n}"),
            Op::Lt(n) => write!(f, "{k}<{n}"),
        }
    }
}

impl Requirement {
    fn parse(s: &str) -> Result<Self, ParseError> {
        if let Some(key) = s.strip_prefix('!') {
            let key = key.trim();
            validate_key(key)?;
            return Ok(Self {
                key: key.to_string(),
                op: Op::DoesNotExist,
            });
        }
        // Set-based forms: `key in (a,b)` / `key notin (a,b)`.
        if let Some(open) = s.find('(') {
            let head = s[..open].trim();
            let close = s
                .rfind(')')
                .filter(|c| *c > open && s[c + 1..].trim().is_empty())
                .ok_or_else(|| ParseError(format!("found '{s}', expected: ')'")))?;
            let mut words = head.split_whitespace();
            let (key, op) = match (words.next(), words.next(), words.next()) {
                (Some(k), Some(op), None) => (k, op),
                _ => return Err(ParseError(format!("found '{s}', expected: in, notin"))),
            };
            validate_key(key)?;
            let values: Vec<String> = s[open + 1..close]
                .split(',')
                .map(|v| v.trim().to_string())
                .collect();
            for v in &values {
                validate_value(v)?;
            }
            let op = match op {
                "in" => Op::In(values),
                "notin" => Op::NotIn(values),
                other => return Err(ParseError(format!("found '{other}', expected: in, notin"))),
            };
            return Ok(Self {
                key: key.to_string(),
                op,
            });
        }
        for (token, build) in [
            ("!=", (|v: String| Op::NotIn(vec![v])) as fn(String) -> Op),
            ("==", |v| Op::In(vec![v])),
            ("=", |v| Op::In(vec![v])),
        ] {
            if let Some((k, v)) = s.split_once(token) {
                let (k, v) = (k.trim(), v.trim());
                validate_key(k)?;
                validate_value(v)?;
                return Ok(Self {
                    key: k.to_string(),
                    op: build(v.to_string()),
                });
            }
        }
        for (token, gt) in [('>', true), ('<', false)] {
            if let Some((k, v)) = s.split_once(token) {
                let (k, v) = (k.trim(), v.trim());
                validate_key(k)?;
                let n: i64 = v.parse().map_err(|_| {
                    ParseError(format!(
                        "for 'Gt', 'Lt' operators, the value must be an integer: {v}"
                    ))
                })?;
                let op = if gt { Op::Gt(n) } else { Op::Lt(n) };
                return Ok(Self {
                    key: k.to_string(),
                    op,
                });
            }
        }
        let key = s.trim();
        if key.contains(char::is_whitespace) {
            return Err(ParseError(format!(
                "found '{key}', expected: in, notin, =, ==, !=, gt, lt"
            )));
        }
        validate_key(key)?;
        Ok(Self {
            key: key.to_string(),
            op: Op::Exists,
        })
    }

    fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        let value = get(&self.key);
        match &self.op {
            Op::In(vals) => value.is_some_and(|v| vals.iter().any(|x| x == v)),
            Op::NotIn(vals) => value.is_none_or(|v| !vals.iter().any(|x| x == v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Gt(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Op::Lt(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(input: &str) -> Result<Vec<&str>, ParseError> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(ParseError(format!("unexpected ')' in '{input}'")));
                }
            }
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(ParseError(format!("found '{input}', expected: ')'")));
    }
    parts.push(&input[start..]);
    Ok(parts)
}

fn validate_key(key: &str) -> Result<(), ParseError> {
    crate::validation::qualified_name(key)
        .map_err(|msg| ParseError(format!("invalid label key \"{key}\": {msg}")))
}

fn validate_value(value: &str) -> Result<(), ParseError> {
    crate::validation::label_value(value)
        .map_err(|msg| ParseError(format!("invalid label value: \"{value}\": {msg}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_set_and_existence() {
        let sel = Selector::parse("app=web,tier notin (db, cache),!canary").unwrap();
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(
            sel.matches(&labels(&[("app", "web")])),
            "notin matches an absent key"
        );
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("canary", "1")])));
        assert!(!sel.matches(&labels(&[("app", "api")])));
    }

    #[test]
    fn inequality_and_prefixed_keys() {
        let sel = Selector::parse("app.kubernetes.io/name!=db, env").unwrap();
        assert!(sel.matches(&labels(&[("env", "x")])));
        assert!(!sel.matches(&labels(&[("env", "x"), ("app.kubernetes.io/name", "db")])));
        let gt = Selector::parse("gen>3").unwrap();
        assert!(gt.matches(&labels(&[("gen", "4")])));
        assert!(!gt.matches(&labels(&[("gen", "3")])));
    }

    #[test]
    fn round_trips_to_string() {
        let sel = Selector::parse("a=b,c in (d,e),!f,g").unwrap();
        assert_eq!(sel.to_string(), "a=b,c in (d,e),!f,g");
        assert_eq!(Selector::parse(&sel.to_string()).unwrap(), sel);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Selector::parse("a in (b").is_err());
        assert!(Selector::parse("a b").is_err());
        assert!(Selector::parse("-bad=x").is_err());
        assert!(Selector::parse("a=b c").is_err());
    }

    #[test]
    fn object_form() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]
        }))
        .unwrap();
        let sel = Selector::from_label_selector(&sel).unwrap();
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "b")])));
        assert!(!sel.matches(&labels(&[("app", "web")])));
        assert_eq!(sel.to_string(), "app=web,tier in (a,b)");
    }
}
