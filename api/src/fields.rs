//! Field selectors (`?fieldSelector=`): `f=v`, `f==v`, `f!=v`, comma means AND.

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<Term>,
}

/// One `field op value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The field path, e.g. `spec.nodeName`.
    pub field: String,
    /// The value compared against.
    pub value: String,
    /// True for `!=`.
    pub negated: bool,
}

/// Why a field selector could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field selector: {0}")]
pub struct ParseError(String);

impl FieldSelector {
    /// Parses `a=b,c!=d`. Backslash escapes `,`, `=` and `!` in values as apimachinery does.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let mut terms = Vec::new();
        for part in split_unescaped(input, ',') {
            if part.trim().is_empty() {
                continue;
            }
            let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, false)
            } else {
                return Err(ParseError(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                )));
            };
            terms.push(Term {
                field: field.trim().to_string(),
                value: unescape(value.trim()),
                negated,
            });
        }
        Ok(Self { terms })
    }

    /// The terms, in order.
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// True when every term holds; `lookup` returns a field's value ("" when unset).
    pub fn matches(&self, lookup: impl Fn(&str) -> String) -> bool {
        self.terms
            .iter()
            .all(|t| (lookup(&t.field) == t.value) != t.negated)
    }

    /// The value an equality term requires for `field`, if any (used to narrow a scan).
    pub fn required(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let sel = FieldSelector::parse("metadata.name=web,status.phase!=Running").unwrap();
        assert_eq!(sel.required("metadata.name"), Some("web"));
        let lookup = |phase: &'static str| {
            move |f: &str| match f {
                "metadata.name" => "web".to_string(),
                "status.phase" => phase.to_string(),
                _ => String::new(),
            }
        };
        assert!(sel.matches(lookup("Pending")));
        assert!(!sel.matches(lookup("Running")));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
