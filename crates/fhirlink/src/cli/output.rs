//! What the CLI prints: ARM JSON as it came for scripts (`--output json`), or a table of the
//! columns a person looks for, in the manner of `az ... --output table`.

use std::io::Write as _;

use serde_json::Value;

use super::client::Output;

/// A table column: its heading and how to read it from a resource.
pub(crate) struct Column {
    pub(crate) heading: &'static str,
    pub(crate) read: fn(&Value) -> String,
}

pub(crate) const fn col(heading: &'static str, read: fn(&Value) -> String) -> Column {
    Column { heading, read }
}

/// Prints one resource.
pub(crate) fn one(output: Output, value: &Value, columns: &[Column]) {
    match output {
        Output::Json => print_json(value),
        Output::Table => table(std::slice::from_ref(value), columns),
    }
}

/// Prints a list of resources (a JSON array for scripts).
pub(crate) fn many(output: Output, values: &[Value], columns: &[Column]) {
    match output {
        Output::Json => print_json(&Value::Array(values.to_vec())),
        Output::Table => table(values, columns),
    }
}

pub(crate) fn print_json(value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

fn table(rows: &[Value], columns: &[Column]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| clean((c.read)(row))).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.heading.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |items: Vec<&str>| {
        let mut s = String::new();
        for (i, item) in items.iter().enumerate() {
            if i + 1 == items.len() {
                s.push_str(item);
            } else {
                let pad = widths[i].saturating_sub(item.chars().count());
                s.push_str(item);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line(columns.iter().map(|c| c.heading).collect()));
    let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let _ = writeln!(out, "{}", line(dashes.iter().map(String::as_str).collect()));
    for row in &cells {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// Control characters from the server never reach the terminal.
fn clean(s: String) -> String {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        s
    }
}

/// The value at a JSON pointer as text: strings bare, arrays joined with ", ", nothing for
/// null or absent.
pub(crate) fn at(v: &Value, pointer: &str) -> String {
    text(v.pointer(pointer).unwrap_or(&Value::Null))
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// The last segment of the resource id at `pointer` (the name it points to).
pub(crate) fn id_name(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|id| id.trim_end_matches('/').rsplit('/').next())
        .unwrap_or_default()
        .to_string()
}

/// The resource group named in a resource's id.
pub(crate) fn resource_group(v: &Value) -> String {
    let id = v.get("id").and_then(Value::as_str).unwrap_or_default();
    let mut parts = id.split('/');
    while let Some(p) = parts.next() {
        if p.eq_ignore_ascii_case("resourceGroups") {
            return parts.next().unwrap_or_default().to_string();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readers() {
        let v = json!({"id": "/subscriptions/s/resourceGroups/rg1/providers/X/y/n",
            "p": {"a": ["x", "y"], "n": 3, "s": "t"}, "r": {"id": "/a/b/c"}});
        assert_eq!(at(&v, "/p/a"), "x, y");
        assert_eq!(at(&v, "/p/n"), "3");
        assert_eq!(at(&v, "/p/missing"), "");
        assert_eq!(id_name(&v, "/r/id"), "c");
        assert_eq!(resource_group(&v), "rg1");
        assert_eq!(clean("a\u{1b}[31mb".into()), "a [31mb");
    }
}
