//! Describe output as kubectl writes it: indented `Key:\tvalue` lines, aligned like Go's
//! `text/tabwriter` (padding 2) aligns them, so the columns line up as users know them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

/// Lines of describe output, indented two spaces per level, cells separated by tabs.
#[derive(Default)]
pub struct Text {
    raw: String,
}

impl Text {
    /// One line at `level` (`\t` separates aligned cells).
    pub fn line(&mut self, level: usize, text: impl AsRef<str>) {
        for _ in 0..level {
            self.raw.push_str("  ");
        }
        self.raw.push_str(text.as_ref());
        self.raw.push('\n');
    }

    /// `Key:\tvalue` at `level`.
    pub fn field(&mut self, level: usize, key: &str, value: impl std::fmt::Display) {
        self.line(level, format!("{key}:\t{value}"));
    }

    /// `Title:\tk=v`, one label a line (kubectl's printLabelsMultiline); `<none>` when empty.
    pub fn map(&mut self, level: usize, title: &str, map: Option<&BTreeMap<String, String>>) {
        let entries: Vec<String> = map
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        self.multiline(level, title, &entries);
    }

    /// Annotations, without the copy of the object kubectl apply keeps in one.
    pub fn annotations(&mut self, level: usize, title: &str, meta: &ObjectMeta) {
        let entries: Vec<String> = meta
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| *k != "kubectl.kubernetes.io/last-applied-configuration")
            .map(|(k, v)| format!("{k}: {}", v.trim_end()))
            .collect();
        self.multiline(level, title, &entries);
    }

    /// `Title:\tfirst`, then one entry a line in the same column; `<none>` when empty.
    pub fn multiline(&mut self, level: usize, title: &str, entries: &[String]) {
        match entries.split_first() {
            None => self.field(level, title, "<none>"),
            Some((first, rest)) => {
                self.field(level, title, first);
                for e in rest {
                    self.line(level, format!("\t{e}"));
                }
            }
        }
    }

    /// Tolerations as kubectl prints them: `key=value:Effect op=Exists for 300s`.
    pub fn tolerations(
        &mut self,
        level: usize,
        title: &str,
        tolerations: Option<&Vec<Toleration>>,
    ) {
        let entries: Vec<String> = tolerations.into_iter().flatten().map(toleration).collect();
        self.multiline(level, title, &entries);
    }

    /// The aligned text.
    pub fn render(&self) -> String {
        tabwrite(&self.raw, 2)
    }
}

fn toleration(t: &Toleration) -> String {
    let mut s = t.key.clone().unwrap_or_default();
    let value = t.value.as_deref().unwrap_or_default();
    if !value.is_empty() {
        s.push_str(&format!("={value}"));
    }
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        s.push_str(&format!(":{effect}"));
    }
    if t.operator.as_deref() == Some("Exists") && value.is_empty() {
        s.push_str(if s.is_empty() {
            "op=Exists"
        } else {
            " op=Exists"
        });
    }
    if let Some(seconds) = t.toleration_seconds {
        s.push_str(&format!(" for {seconds}s"));
    }
    s
}

/// A label selector as kubectl prints it (`app=web,tier in (a,b)`), `<none>` when it selects
/// everything.
pub fn selector(selector: Option<&LabelSelector>) -> String {
    let Some(sel) = selector else {
        return "<none>".into();
    };
    let mut terms: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        terms.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => format!("{} {op} ({values})", e.key),
        });
    }
    if terms.is_empty() {
        "<none>".into()
    } else {
        terms.join(",")
    }
}

/// A quantity in its canonical form, as kubectl prints quantities (`1000` → `1k`, `0.5` →
/// `500m`, `1048576Ki` → `1Gi`).
pub fn quantity(q: &Quantity) -> String {
    let binary = q.0.trim_end().ends_with('i');
    match skiff_api::quantity::parse_milli(&q.0) {
        Ok(milli) => quantity_milli(milli, binary),
        Err(_) => q.0.clone(),
    }
}

/// A number of milli-units in canonical form: with a binary suffix when `binary` and one
/// divides it, else with the largest decimal suffix that keeps it whole (`m` for fractions).
pub fn quantity_milli(milli: i128, binary: bool) -> String {
    let sign = if milli < 0 { "-" } else { "" };
    let milli = milli.abs();
    if milli % 1000 != 0 {
        return format!("{sign}{milli}m");
    }
    let n = milli / 1000;
    if n == 0 {
        return "0".into();
    }
    if binary && n >= 1024 {
        for (unit, shift) in [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ] {
            if n % (1i128 << shift) == 0 {
                return format!("{sign}{}{unit}", n >> shift);
            }
        }
    }
    for (unit, exp) in [
        ("E", 18),
        ("P", 15),
        ("T", 12),
        ("G", 9),
        ("M", 6),
        ("k", 3),
    ] {
        let size = 10i128.pow(exp);
        if n % size == 0 {
            return format!("{sign}{}{unit}", n / size);
        }
    }
    format!("{sign}{n}")
}

/// A timestamp as kubectl's describe prints it (Go's RFC 1123 with numeric zone), in local time.
pub fn time(t: &Time) -> String {
    let tz = jiff::tz::TimeZone::system();
    t.0.to_zoned(tz)
        .strftime("%a, %d %b %Y %H:%M:%S %z")
        .to_string()
}

/// How long ago `t` was, as kubectl prints ages; `<unknown>` without one.
pub fn since(t: Option<&Time>) -> String {
    match t {
        Some(t) => skiff_api::age::human_duration((jiff::Timestamp::now() - t.0).get_seconds()),
        None => "<unknown>".into(),
    }
}

/// Aligns tab-separated cells as Go's `text/tabwriter` does (minimum width 0, padding
/// `padding`, spaces): a column block is a run of consecutive lines that have a tab-terminated
/// cell in that column, and every cell in a block is padded to the block's widest.
fn tabwrite(text: &str, padding: usize) -> String {
    let lines: Vec<Vec<&str>> = text
        .split_terminator('\n')
        .map(|l| l.split('\t').collect())
        .collect();
    let mut out = String::new();
    format(&lines, 0, lines.len(), &mut Vec::new(), padding, &mut out);
    out
}

fn format(
    lines: &[Vec<&str>],
    mut line0: usize,
    line1: usize,
    widths: &mut Vec<usize>,
    padding: usize,
    out: &mut String,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, line0, this, widths, out);
        line0 = this;
        let mut width = 0;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].chars().count() + padding);
            this += 1;
        }
        widths.push(width);
        format(lines, line0, this, widths, padding, out);
        widths.pop();
        line0 = this;
    }
    write_lines(lines, line0, line1, widths, out);
}

fn write_lines(lines: &[Vec<&str>], from: usize, to: usize, widths: &[usize], out: &mut String) {
    for line in &lines[from..to] {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if let Some(w) = widths.get(j) {
                let n = cell.chars().count();
                out.extend(std::iter::repeat_n(' ', w.saturating_sub(n)));
            }
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_per_block_as_go_tabwriter_does() {
        let mut t = Text::default();
        t.field(0, "Name", "ticker");
        t.field(0, "Service Account", "default");
        t.line(0, "Containers:");
        t.line(1, "ticker:");
        t.field(2, "Image", "ticker:1.0");
        t.field(2, "Restart Count", 0);
        t.line(0, "Conditions:");
        t.line(1, "Type\tStatus");
        t.line(1, "PodScheduled \tTrue ");
        t.map(
            0,
            "Labels",
            Some(&[("a".into(), "1".into()), ("b".into(), "2".into())].into()),
        );
        t.field(0, "Events", "<none>");
        assert_eq!(
            t.render(),
            "Name:             ticker\n\
             Service Account:  default\n\
             Containers:\n  \
               ticker:\n    \
                 Image:          ticker:1.0\n    \
                 Restart Count:  0\n\
             Conditions:\n  \
               Type           Status\n  \
               PodScheduled   True \n\
             Labels:          a=1\n                 \
                              b=2\n\
             Events:          <none>\n"
        );
    }

    #[test]
    fn quantities_print_in_canonical_form() {
        let q = |s: &str| quantity(&Quantity(s.into()));
        assert_eq!(q("1000"), "1k");
        assert_eq!(q("1500"), "1500");
        assert_eq!(q("0.5"), "500m");
        assert_eq!(q("2"), "2");
        assert_eq!(q("16Mi"), "16Mi");
        assert_eq!(q("1048576Ki"), "1Gi");
        assert_eq!(q("8040144Ki"), "8040144Ki");
        assert_eq!(q("0"), "0");
    }

    #[test]
    fn tolerations_and_selectors_read_like_kubectl() {
        let t: Toleration = serde_json::from_value(serde_json::json!({
            "key": "node.kubernetes.io/not-ready", "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 300}))
        .unwrap();
        assert_eq!(
            toleration(&t),
            "node.kubernetes.io/not-ready:NoExecute op=Exists for 300s"
        );
        let t: Toleration = serde_json::from_value(serde_json::json!({
            "key": "dedicated", "value": "edge", "effect": "NoSchedule"}))
        .unwrap();
        assert_eq!(toleration(&t), "dedicated=edge:NoSchedule");
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}))
        .unwrap();
        assert_eq!(selector(Some(&sel)), "app=web,tier in (a,b)");
    }
}
