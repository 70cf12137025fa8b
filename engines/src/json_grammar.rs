//! Compact JSON, the one JSON layout every engine's constraint allows: `", "` between items,
//! `": "` after keys, no other whitespace, properties in the schema's order. llguidance gets it
//! as options (`guidance::compact_json`); a llama-server gets it here, as a GBNF grammar
//! ([`compact_gbnf`]) sent instead of `json_schema`.
//!
//! llama-server's own grammar from `json_schema` also allows `"\n"{1,2} [ \t]{0,20}` after
//! every `{`, `[`, `,` and `:`. Under greedy decoding `SmolLM2` takes that newline at the first
//! step on every cuad-mini dev contract, so the two engines answered differently from the
//! second byte on (docs/engines.md, "Engine parity"). The grammar here describes the same
//! language as llguidance's compact JSON, so greedy decoding picks the same tokens on both.
//!
//! Only the schema keywords whose meaning is plain are translated; a schema using any other
//! ([`Unsupported`]) is left to the server's own `json_schema` conversion, with its whitespace.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Between array items and object members.
pub const ITEM_SEPARATOR: &str = ", ";
/// Between a key and its value.
pub const KEY_SEPARATOR: &str = ": ";

/// One JSON string character as llguidance allows it: anything but `"`, `\` and control
/// characters, a short escape (no `\/`), or a `\u` escape of a Unicode scalar (a surrogate
/// pair counts as one character).
const CHAR_RULE: &str = r#"char ::= [^"\\\x7F\x00-\x1F] | "\\" ( ["\\bfnrt] | "u" ( [0-9a-ce-fA-CE-F] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} | [dD] [89aAbB] [0-9a-fA-F]{2} "\\u" [dD] [c-fC-F] [0-9a-fA-F]{2} ) )"#;

/// Keywords that only describe (ignored by both constraints).
const ANNOTATIONS: &[&str] = &["$schema", "$id", "$comment", "title", "description", "default", "examples", "deprecated"];

/// A schema keyword this translation does not cover, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The GBNF grammar (root rule `root`) of the compact JSON values `schema` allows.
///
/// # Errors
/// [`Unsupported`] naming the first keyword (or keyword combination) it does not translate:
/// `$ref`, `oneOf`, `pattern`, `format`, numeric bounds, open objects
/// (`additionalProperties` other than `false`), `prefixItems`, `uniqueItems` and the like.
pub fn compact_gbnf(schema: &Value) -> Result<String, Unsupported> {
    let mut g = Gbnf::default();
    let root = g.value(schema, "#")?;
    let mut out = format!("root ::= {root}\n");
    for (name, body) in &g.rules {
        let _ = writeln!(out, "{name} ::= {body}");
    }
    if g.uses_char {
        out.push_str(CHAR_RULE);
        out.push('\n');
    }
    Ok(out)
}

#[derive(Default)]
struct Gbnf {
    rules: Vec<(String, String)>,
    uses_char: bool,
}

impl Gbnf {
    fn rule(&mut self, body: String) -> String {
        let name = format!("r{}", self.rules.len());
        self.rules.push((name.clone(), body));
        name
    }

    /// The GBNF expression of one schema (`at`: its JSON pointer, for errors).
    fn value(&mut self, schema: &Value, at: &str) -> Result<String, Unsupported> {
        let unsupported = |what: &str| Unsupported(format!("{what} at {at}"));
        let obj = match schema {
            Value::Bool(true) => return Err(unsupported("`true` (any value)")),
            Value::Bool(false) => return Err(unsupported("`false` (no value)")),
            Value::Object(o) => o,
            _ => return Err(unsupported("a schema that is not an object")),
        };
        let known = [
            "type",
            "enum",
            "const",
            "anyOf",
            "properties",
            "required",
            "additionalProperties",
            "items",
            "minItems",
            "maxItems",
            "minLength",
            "maxLength",
        ];
        if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str())) {
            return Err(unsupported(&format!("`{k}`")));
        }
        if let Some(values) = obj.get("enum").map(|e| e.as_array().cloned().ok_or_else(|| unsupported("a non-array `enum`"))) {
            return self.literals(obj, &values?, at);
        }
        if let Some(c) = obj.get("const") {
            return self.literals(obj, std::slice::from_ref(c), at);
        }
        if let Some(any) = obj.get("anyOf") {
            if obj.keys().any(|k| k != "anyOf" && !ANNOTATIONS.contains(&k.as_str())) {
                return Err(unsupported("`anyOf` beside other keywords"));
            }
            let branches = any.as_array().filter(|b| !b.is_empty()).ok_or_else(|| unsupported("an empty `anyOf`"))?;
            let alts = branches
                .iter()
                .enumerate()
                .map(|(i, b)| self.value(b, &format!("{at}/anyOf/{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(format!("( {} )", alts.join(" | ")));
        }
        let types: Vec<&str> = match obj.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => {
                ts.iter().map(|t| t.as_str().ok_or_else(|| unsupported("a non-string `type`"))).collect::<Result<_, _>>()?
            }
            _ => return Err(unsupported("no `type`")),
        };
        let alts = types.iter().map(|t| self.typed(obj, t, at)).collect::<Result<Vec<_>, _>>()?;
        Ok(if alts.len() == 1 { alts.into_iter().next().unwrap_or_default() } else { format!("( {} )", alts.join(" | ")) })
    }

    fn typed(&mut self, obj: &Map<String, Value>, ty: &str, at: &str) -> Result<String, Unsupported> {
        let unsupported = |what: &str| Unsupported(format!("{what} at {at}"));
        let count = |k: &str| -> Result<Option<u64>, Unsupported> {
            obj.get(k).map(|v| v.as_u64().ok_or_else(|| unsupported(&format!("a non-integer `{k}`")))).transpose()
        };
        match ty {
            "null" => Ok(r#""null""#.into()),
            "boolean" => Ok(r#"( "true" | "false" )"#.into()),
            "integer" => Ok(r#"( "-"? ( "0" | [1-9] [0-9]* ) )"#.into()),
            "number" => Ok(r#"( "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )? )"#.into()),
            "string" => {
                self.uses_char = true;
                let (min, max) = (count("minLength")?.unwrap_or(0), count("maxLength")?);
                Ok(format!(r#"( "\"" {} "\"" )"#, repeat("char", min, max)))
            }
            "array" => {
                let item = match obj.get("items") {
                    Some(items) => self.value(items, &format!("{at}/items"))?,
                    None => return Err(unsupported("an array without `items`")),
                };
                let (min, max) = (count("minItems")?.unwrap_or(0), count("maxItems")?);
                if max == Some(0) {
                    return Ok(r#""[]""#.into());
                }
                let item = self.rule(item);
                let more = repeat(&format!("{} {item}", literal(ITEM_SEPARATOR)), min.saturating_sub(1), max.map(|m| m - 1));
                let body = format!("{item} {more}");
                Ok(if min == 0 { format!(r#"( "[" ( {body} )? "]" )"#) } else { format!(r#"( "[" {body} "]" )"#) })
            }
            "object" => self.object(obj, at),
            other => Err(unsupported(&format!("type `{other}`"))),
        }
    }

    /// Members in the order of `properties`, each required one present, each optional one
    /// present or not (llguidance's order; no other key).
    fn object(&mut self, obj: &Map<String, Value>, at: &str) -> Result<String, Unsupported> {
        let unsupported = |what: &str| Unsupported(format!("{what} at {at}"));
        if obj.get("additionalProperties") != Some(&Value::Bool(false)) {
            return Err(unsupported("an object without `additionalProperties: false`"));
        }
        let empty = Map::new();
        let props = match obj.get("properties") {
            Some(Value::Object(p)) => p,
            None => &empty,
            Some(_) => return Err(unsupported("non-object `properties`")),
        };
        let required: Vec<&str> =
            obj.get("required").and_then(Value::as_array).map_or(Vec::new(), |r| r.iter().filter_map(Value::as_str).collect());
        if let Some(r) = required.iter().find(|r| !props.contains_key(**r)) {
            return Err(unsupported(&format!("required `{r}` without a schema")));
        }
        let mut members = Vec::new();
        for (name, schema) in props {
            let key = serde_json::to_string(name).unwrap_or_default();
            let value = self.value(schema, &format!("{at}/properties/{name}"))?;
            let member = self.rule(format!("{} {value}", literal(&format!("{key}{KEY_SEPARATOR}"))));
            members.push((member, required.contains(&name.as_str())));
        }
        if members.is_empty() {
            return Ok(r#""{}""#.into());
        }
        if members.iter().all(|m| m.1) {
            let sep = format!(" {} ", literal(ITEM_SEPARATOR));
            let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
            return Ok(format!(r#"( "{{" {} "}}" )"#, names.join(&sep)));
        }
        // tail[i]: the members from i on after one was written (i >= 1); head: before any was.
        let n = members.len();
        let mut tail = vec![String::new(); n + 1];
        tail[n] = "\"\"".into();
        for i in (1..n).rev() {
            let alts = self.choices(&members, i, &tail, true);
            tail[i] = self.rule(alts);
        }
        let head = self.choices(&members, 0, &tail, false);
        Ok(format!(r#"( "{{" ( {head} ) "}}" )"#))
    }

    /// The alternatives from member `i` on: write member j (every member before it, from i, is
    /// optional and skipped), then `tail[j + 1]`; or nothing when every member left is optional.
    #[allow(clippy::unused_self)] // a method beside the other rule writers
    fn choices(&self, members: &[(String, bool)], i: usize, tail: &[String], after_one: bool) -> String {
        let sep = if after_one { format!("{} ", literal(ITEM_SEPARATOR)) } else { String::new() };
        let mut alts = Vec::new();
        for j in i..members.len() {
            alts.push(format!("{sep}{} {}", members[j].0, tail[j + 1]));
            if members[j].1 {
                return alts.join(" | ");
            }
        }
        alts.push("\"\"".into());
        alts.join(" | ")
    }

    /// `enum` / `const`: the values, each written as compact JSON (strings as `serde_json` writes
    /// them, as llguidance does), kept only when they have the schema's `type`.
    #[allow(clippy::unused_self)] // a method beside the other rule writers
    fn literals(&mut self, obj: &Map<String, Value>, values: &[Value], at: &str) -> Result<String, Unsupported> {
        let unsupported = |what: &str| Unsupported(format!("{what} at {at}"));
        if let Some(k) =
            obj.keys().find(|k| !["enum", "const", "type"].contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
        {
            return Err(unsupported(&format!("`{k}` beside `enum`/`const`")));
        }
        let types: Option<Vec<&str>> = match obj.get("type") {
            None => None,
            Some(Value::String(t)) => Some(vec![t.as_str()]),
            Some(Value::Array(ts)) => Some(ts.iter().filter_map(Value::as_str).collect()),
            Some(_) => return Err(unsupported("a non-string `type`")),
        };
        let mut alts = Vec::new();
        for v in values {
            let ty = match v {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::String(_) => "string",
                Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
                Value::Number(_) => "number",
                _ => return Err(unsupported("an array or object in `enum`/`const`")),
            };
            let fits = types.as_ref().is_none_or(|ts| ts.contains(&ty) || (ty == "integer" && ts.contains(&"number")));
            if fits {
                alts.push(literal(&serde_json::to_string(v).unwrap_or_default()));
            }
        }
        if alts.is_empty() {
            return Err(unsupported("an `enum` no value of which has the `type`"));
        }
        Ok(format!("( {} )", alts.join(" | ")))
    }
}

/// `what` repeated `min` to `max` times (no upper bound: `None`), as GBNF.
fn repeat(what: &str, min: u64, max: Option<u64>) -> String {
    match (min, max) {
        (_, Some(max)) if max < min => "\"\"".to_owned(),
        (0, None) => format!("( {what} )*"),
        (1, None) => format!("( {what} )+"),
        (min, None) => format!("( {what} ){{{min},}}"),
        (min, Some(max)) if min == max => format!("( {what} ){{{min}}}"),
        (min, Some(max)) => format!("( {what} ){{{min},{max}}}"),
    }
}

/// A GBNF string literal of `text`: `"` and `\` escaped, control characters as `\xHH`, the rest
/// as UTF-8.
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7F => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn required_members_in_schema_order_with_the_compact_separators() {
        let schema = json!({
            "type": "object", "additionalProperties": false, "required": ["b", "a"],
            "description": "ignored",
            "properties": {
                "b": {"type": ["string", "null"], "minLength": 1, "maxLength": 5},
                "a": {"type": "array", "items": {"type": "string", "enum": ["x\"y", "z"]}, "minItems": 1, "maxItems": 3}
            }
        });
        let g = compact_gbnf(&schema).unwrap();
        assert!(g.starts_with(r#"root ::= ( "{" r0 ", " r2 "}" )"#), "{g}");
        assert!(g.contains(r#"r0 ::= "\"b\": " ( ( "\"" ( char ){1,5} "\"" ) | "null" )"#), "{g}");
        assert!(g.contains(r#"r1 ::= ( "\"x\\\"y\"" | "\"z\"" )"#), "{g}");
        assert!(g.contains(r#"r2 ::= "\"a\": " ( "[" r1 ( ", " r1 ){0,2} "]" )"#), "{g}");
        assert!(g.contains("char ::= "), "{g}");
    }

    #[test]
    fn optional_members_may_be_skipped_but_keep_their_order() {
        let schema = json!({
            "type": "object", "additionalProperties": false, "required": ["b"],
            "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}, "c": {"type": "null"}}
        });
        let g = compact_gbnf(&schema).unwrap();
        // head: a then tail(1), or b then tail(2) (a skipped); b is required so no empty object.
        assert!(g.starts_with(r#"root ::= ( "{" ( r0 r4 | r1 r3 ) "}" )"#), "{g}");
        assert!(g.contains(r#"r3 ::= ", " r2 "" | """#), "tail after b: c or nothing: {g}");
        assert!(g.contains(r#"r4 ::= ", " r1 r3"#), "tail after a: b is required: {g}");
        assert!(!g.contains("r5"), "{g}");
    }

    #[test]
    fn keywords_not_translated_are_named() {
        let open = json!({"type": "object", "properties": {}});
        assert!(compact_gbnf(&open).unwrap_err().0.contains("additionalProperties"));
        let pattern = json!({"type": "object", "additionalProperties": false, "required": ["a"],
            "properties": {"a": {"type": "string", "pattern": "^x"}}});
        assert_eq!(compact_gbnf(&pattern).unwrap_err().0, "`pattern` at #/properties/a");
        assert!(compact_gbnf(&json!({"$ref": "#/defs/x"})).is_err());
        assert!(compact_gbnf(&json!({"type": "number", "minimum": 0})).is_err());
    }

    #[test]
    fn literals_escape_quotes_backslashes_and_control_characters() {
        assert_eq!(literal("a\"b\\c\nd é"), r#""a\"b\\c\x0Ad é""#);
        assert_eq!(repeat("x", 0, None), "( x )*");
        assert_eq!(repeat("x", 2, Some(2)), "( x ){2}");
    }
}
