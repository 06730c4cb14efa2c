//! Compose files as text to `serde_json::Value`: this module owns the YAML a
//! stack file may use, read from `saphyr_parser` events without recursion.
//!
//! The rules are YAML 1.2's core schema as a Compose user expects them:
//!
//! - Plain scalars `null`, `Null`, `NULL`, `~` and the empty scalar are null;
//!   `true`, `True`, `TRUE`, `false`, `False`, `FALSE` are booleans; any other
//!   scalar, numbers included, is a string holding the exact text (`1.10`
//!   stays `"1.10"`, `8080:80` stays `"8080:80"`, `yes` and `off` stay
//!   strings): callers parse numbers where a field wants one. Quoted and
//!   block (`|`, `>`) scalars are always strings.
//! - Tags: `!!str` (and the non-specific `!`) make a string; `!!null`,
//!   `!!bool`, `!!int` and `!!float` read the scalar as a plain one (so int
//!   and float stay strings); `!!map` and `!!seq` fit their collections. Any
//!   other tag is an error.
//! - Mapping keys are scalars (or aliases of scalars), kept as their text:
//!   `~: x` has the key `"~"`. A repeated key in one mapping is an error.
//!   Key order is kept.
//! - Merge keys: a plain `<<` takes a mapping or a list of mappings (usually
//!   aliases, `<<: *defaults`) whose entries fill the keys the mapping does
//!   not set itself, wherever those are written; in a list, and over
//!   several `<<` keys, earlier mappings win. The merged keys come after the
//!   mapping's own. A quoted `"<<"` is an ordinary key.
//! - An alias is a copy of its anchored node; an alias to a node that
//!   contains it is an error. Copies count against [`NODES_MAX`] values and
//!   [`EXPANDED_BYTES_MAX`] bytes of text (keys included), as do the copies
//!   kept for anchors, so "billion laughs" files fail early.
//! - Mappings and lists nest at most [`DEPTH_MAX`] levels, aliases expanded,
//!   so callers may walk the result recursively.
//! - A file holds exactly one document: none (empty or only comments) and
//!   more than one are errors. A lone `---` gives null.
//!
//! Errors say where (lines and columns from 1): `line 3, column 5: ...` for
//! the scanner's, `... at line 3, column 5` for this module's, but for the
//! whole-file ones (too large, empty, more than one document).

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Tag};
use serde_json::{Map, Value};
use std::fmt;

/// Largest file accepted.
pub(crate) const TEXT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Deepest nesting of mappings and lists, aliases expanded.
pub(crate) const DEPTH_MAX: usize = 64;
/// Most values (scalars, mappings, lists) a file may expand to, counting
/// alias copies and the copies kept for anchors.
pub(crate) const NODES_MAX: usize = 100_000;
/// Most scalar and key text a file may expand to, counted as for [`NODES_MAX`].
pub(crate) const EXPANDED_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The prefix `!!` stands for.
const CORE_TAG: &str = "tag:yaml.org,2002:";

/// A place in the file, lines and columns from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct At {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

fn at(mark: Marker) -> At {
    At { line: mark.line(), column: mark.col().saturating_add(1) }
}

/// A file that is not a Compose-usable YAML document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum YamlError {
    #[error("the file is {0} bytes, more than the {TEXT_BYTES_MAX} allowed")]
    TooLarge(usize),
    #[error("the file is empty")]
    Empty,
    #[error("the file holds more than one YAML document; use one per file")]
    Documents,
    /// The scanner's or parser's message.
    #[error("{0}: {1}")]
    Syntax(At, String),
    #[error("duplicate key {0:?} at {1}")]
    DuplicateKey(String, At),
    #[error("unsupported tag {0} at {1}")]
    Tag(String, At),
    #[error("the key at {0} is a mapping or a list; keys must be scalars")]
    Key(At),
    #[error("the merge key << at {0} needs a mapping or a list of mappings, as in `<<: *defaults`")]
    Merge(At),
    #[error("the alias at {0} refers to a node that contains it")]
    Recursive(At),
    #[error("mappings and lists nest more than {DEPTH_MAX} levels deep at {0}")]
    Depth(At),
    #[error("the file expands to more than {NODES_MAX} values (aliases): check the anchors and aliases near {0}")]
    Nodes(At),
    #[error("the file expands to more than {EXPANDED_BYTES_MAX} bytes of text (aliases): check the anchors and aliases near {0}")]
    Bytes(At),
}

/// Parses one Compose file (see the module's rules).
pub(crate) fn parse(text: &str) -> Result<Value, YamlError> {
    if text.len() > TEXT_BYTES_MAX {
        return Err(YamlError::TooLarge(text.len()));
    }
    let mut b = Builder { frames: Vec::new(), anchors: Vec::new(), spent: Size::default(), root: None };
    let mut documents = 0usize;
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| YamlError::Syntax(at(*e.marker()), e.info().to_owned()))?;
        let mark = span.start;
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError::Documents);
                }
            }
            Event::Scalar(text, style, anchor, tag) => b.scalar(&text, style, anchor, tag.as_deref(), mark)?,
            Event::Alias(id) => b.alias(id, mark)?,
            Event::SequenceStart(anchor, tag) => b.open(false, anchor, tag.as_deref(), mark)?,
            Event::MappingStart(anchor, tag) => b.open(true, anchor, tag.as_deref(), mark)?,
            Event::SequenceEnd | Event::MappingEnd => b.close()?,
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    b.root.ok_or(YamlError::Empty)
}

/// Values and text bytes, of a node or spent so far.
#[derive(Clone, Copy, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
}

impl Size {
    fn add(&mut self, other: Size) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// What an open mapping waits for.
enum Key {
    /// A key (always, in a list).
    Due,
    /// The value of this key.
    Name(String),
    /// The value of a `<<` key written there.
    Merge(Marker),
}

/// An open mapping or list.
struct Frame {
    /// An `Object` or `Array`, filled in place.
    node: Value,
    key: Key,
    /// The values of the mapping's `<<` keys, merged when it closes.
    merges: Vec<Value>,
    anchor: usize,
    /// This node and what it holds so far.
    size: Size,
    /// The nesting of its deepest child (0: none, or only scalars).
    height: usize,
    mark: Marker,
}

/// A node kept for its anchor: a copy, its size and nesting.
struct Anchored {
    value: Value,
    size: Size,
    height: usize,
}

struct Builder {
    frames: Vec<Frame>,
    /// By anchor id (saphyr numbers anchors from 1 in file order).
    anchors: Vec<Option<Anchored>>,
    spent: Size,
    root: Option<Value>,
}

impl Builder {
    fn spend(&mut self, size: Size, mark: Marker) -> Result<(), YamlError> {
        self.spent.add(size);
        if self.spent.nodes > NODES_MAX {
            return Err(YamlError::Nodes(at(mark)));
        }
        if self.spent.bytes > EXPANDED_BYTES_MAX {
            return Err(YamlError::Bytes(at(mark)));
        }
        Ok(())
    }

    fn key_due(&self) -> bool {
        self.frames.last().is_some_and(|f| matches!(f.key, Key::Due) && f.node.is_object())
    }

    fn keep(&mut self, anchor: usize, value: &Value, size: Size, height: usize, mark: Marker) -> Result<(), YamlError> {
        if anchor == 0 {
            return Ok(());
        }
        self.spend(size, mark)?;
        if self.anchors.len() <= anchor {
            self.anchors.resize_with(anchor.saturating_add(1), || None);
        }
        if let Some(slot) = self.anchors.get_mut(anchor) {
            *slot = Some(Anchored { value: value.clone(), size, height });
        }
        Ok(())
    }

    /// Takes a finished node: keeps it for its anchor, then adds it to the
    /// open collection (or makes it the document).
    fn add(&mut self, value: Value, size: Size, height: usize, anchor: usize, mark: Marker) -> Result<(), YamlError> {
        self.keep(anchor, &value, size, height, mark)?;
        let Some(frame) = self.frames.last_mut() else {
            self.root = Some(value);
            return Ok(());
        };
        frame.size.add(size);
        frame.height = frame.height.max(height);
        match (&mut frame.node, std::mem::replace(&mut frame.key, Key::Due)) {
            (Value::Array(items), _) => items.push(value),
            (Value::Object(map), Key::Name(key)) => {
                map.insert(key, value);
            }
            (Value::Object(_), Key::Merge(key_mark)) => {
                let mergeable = match &value {
                    Value::Object(_) => true,
                    Value::Array(items) => items.iter().all(Value::is_object),
                    _ => false,
                };
                if !mergeable {
                    return Err(YamlError::Merge(at(key_mark)));
                }
                frame.merges.push(value);
            }
            _ => {}
        }
        Ok(())
    }

    /// Takes a key of the innermost mapping.
    fn key(&mut self, key: String, merge: bool, mark: Marker) -> Result<(), YamlError> {
        let size = Size { nodes: 0, bytes: key.len() };
        self.spend(size, mark)?;
        let Some(frame) = self.frames.last_mut() else { return Ok(()) };
        frame.size.add(size);
        if merge {
            frame.key = Key::Merge(mark);
            return Ok(());
        }
        if let Value::Object(map) = &frame.node {
            if map.contains_key(&key) {
                return Err(YamlError::DuplicateKey(key, at(mark)));
            }
        }
        frame.key = Key::Name(key);
        Ok(())
    }

    fn scalar(&mut self, text: &str, style: ScalarStyle, anchor: usize, tag: Option<&Tag>, mark: Marker) -> Result<(), YamlError> {
        let plain = match tag {
            None => style == ScalarStyle::Plain,
            Some(tag) => match core_name(tag) {
                Some("str") => false,
                Some("null" | "bool" | "int" | "float") => true,
                _ => return Err(YamlError::Tag(tag_text(tag), at(mark))),
            },
        };
        let value = match text {
            "" | "~" | "null" | "Null" | "NULL" if plain => Value::Null,
            "true" | "True" | "TRUE" if plain => Value::Bool(true),
            "false" | "False" | "FALSE" if plain => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        };
        let size = Size { nodes: 1, bytes: text.len() };
        if self.key_due() {
            self.keep(anchor, &value, size, 0, mark)?;
            let merge = text == "<<" && style == ScalarStyle::Plain && tag.is_none();
            return self.key(text.to_owned(), merge, mark);
        }
        self.spend(size, mark)?;
        self.add(value, size, 0, anchor, mark)
    }

    fn alias(&mut self, id: usize, mark: Marker) -> Result<(), YamlError> {
        let Some(anchored) = self.anchors.get(id).and_then(Option::as_ref) else {
            // saphyr reports unknown anchors itself: this one is still open.
            return Err(YamlError::Recursive(at(mark)));
        };
        if self.key_due() {
            let key = match &anchored.value {
                Value::String(s) => s.clone(),
                Value::Null => "null".to_owned(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(YamlError::Key(at(mark))),
            };
            return self.key(key, false, mark);
        }
        let (size, height) = (anchored.size, anchored.height);
        if self.frames.len().saturating_add(height) > DEPTH_MAX {
            return Err(YamlError::Depth(at(mark)));
        }
        self.spend(size, mark)?;
        let value = self.anchors.get(id).and_then(Option::as_ref).map_or(Value::Null, |a| a.value.clone());
        self.add(value, size, height, 0, mark)
    }

    fn open(&mut self, map: bool, anchor: usize, tag: Option<&Tag>, mark: Marker) -> Result<(), YamlError> {
        if self.key_due() {
            return Err(YamlError::Key(at(mark)));
        }
        if let Some(tag) = tag {
            if core_name(tag) != Some(if map { "map" } else { "seq" }) {
                return Err(YamlError::Tag(tag_text(tag), at(mark)));
            }
        }
        if self.frames.len() >= DEPTH_MAX {
            return Err(YamlError::Depth(at(mark)));
        }
        let size = Size { nodes: 1, bytes: 0 };
        self.spend(size, mark)?;
        let node = if map { Value::Object(Map::new()) } else { Value::Array(Vec::new()) };
        self.frames.push(Frame { node, key: Key::Due, merges: Vec::new(), anchor, size, height: 0, mark });
        Ok(())
    }

    fn close(&mut self) -> Result<(), YamlError> {
        let Some(Frame { mut node, merges, anchor, size, height, mark, .. }) = self.frames.pop() else { return Ok(()) };
        if let Value::Object(map) = &mut node {
            for source in merges {
                let sources = match source {
                    Value::Array(items) => items,
                    other => vec![other],
                };
                for source in sources {
                    if let Value::Object(entries) = source {
                        for (key, value) in entries {
                            map.entry(key).or_insert(value);
                        }
                    }
                }
            }
        }
        self.add(node, size, height.saturating_add(1), anchor, mark)
    }
}

/// The core-schema name a tag stands for (`!!str`, `!<tag:yaml.org,2002:str>`
/// and `!` give `str`), or `None`.
fn core_name(tag: &Tag) -> Option<&str> {
    if tag.handle == CORE_TAG {
        return Some(&tag.suffix);
    }
    if !tag.handle.is_empty() {
        return None;
    }
    if tag.suffix == "!" {
        return Some("str");
    }
    tag.suffix.strip_prefix(CORE_TAG)
}

/// A tag as written (or close to it), escaped for the terminal.
fn tag_text(tag: &Tag) -> String {
    let text = match tag.handle.as_str() {
        CORE_TAG => format!("!!{}", tag.suffix),
        "!" => format!("!{}", tag.suffix),
        "" if tag.suffix == "!" => "!".to_owned(),
        handle => format!("!<{handle}{}>", tag.suffix),
    };
    text.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(v) => panic!("parsed {text:?} as {v}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn compose_file_with_anchors_and_merges() {
        let text = r#"version: "3.8"

x-defaults: &defaults
  restart: unless-stopped
  logging: &logging
    driver: json-file
    options:
      max-size: 10m
  environment:
    TZ: UTC

services:
  web:
    <<: *defaults
    image: nginx:1.25
    ports:
      - "8080:80"
      - 443:443
    environment:
      - KEY=value
    deploy:
      replicas: 2
      resources:
        limits: {cpus: '0.50', memory: 50M}
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost"]
      interval: 1m30s
  worker:
    <<: [*defaults, {restart: always, user: nobody}]
    restart: on-failure
    image: app
    logging: *logging
    command: >
      run --fast
      --now
    entrypoint: |
      #!/bin/sh
      exec "$@"
    volumes:
      - type: bind
        source: ./data
        target: /data
      - cache:/cache
volumes:
  cache: {}
"#;
        let v = parse(text).unwrap();
        assert_eq!(v["version"], "3.8");
        let web = &v["services"]["web"];
        assert_eq!(web["restart"], "unless-stopped");
        assert_eq!(web["image"], "nginx:1.25");
        assert_eq!(web["ports"], json!(["8080:80", "443:443"]));
        // Explicit keys win over merged ones, whatever the order.
        assert_eq!(web["environment"], json!(["KEY=value"]));
        assert_eq!(web["logging"]["options"]["max-size"], "10m");
        assert_eq!(web["deploy"]["replicas"], "2");
        assert_eq!(web["deploy"]["resources"]["limits"], json!({"cpus": "0.50", "memory": "50M"}));
        assert_eq!(web["healthcheck"]["test"], json!(["CMD", "curl", "-f", "http://localhost"]));
        let keys: Vec<&str> = web.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["image", "ports", "environment", "deploy", "healthcheck", "restart", "logging"]);
        let worker = &v["services"]["worker"];
        assert_eq!(worker["restart"], "on-failure");
        assert_eq!(worker["user"], "nobody");
        assert_eq!(worker["environment"], json!({"TZ": "UTC"}));
        assert_eq!(worker["logging"]["driver"], "json-file");
        assert_eq!(worker["command"], "run --fast --now\n");
        assert_eq!(worker["entrypoint"], "#!/bin/sh\nexec \"$@\"\n");
        assert_eq!(worker["volumes"][0], json!({"type": "bind", "source": "./data", "target": "/data"}));
        assert_eq!(worker["volumes"][1], "cache:/cache");
        assert_eq!(v["volumes"]["cache"], json!({}));
    }

    #[test]
    fn merge_order() {
        let v = parse("a: &a {x: 1, y: 1}\nb: &b {x: 2, z: 2}\nc:\n  <<: [*a, *b]\n  y: 3\nd:\n  <<: *b\n  <<: *a\n").unwrap();
        assert_eq!(v["c"], json!({"y": "3", "x": "1", "z": "2"}));
        assert_eq!(v["d"], json!({"x": "2", "z": "2", "y": "1"}));
        // A quoted "<<" is an ordinary key.
        assert_eq!(parse("\"<<\": 1").unwrap(), json!({"<<": "1"}));
        // An anchor on a merging mapping keeps the merged result.
        let v = parse("a: &a {x: 1}\nb: &b {<<: *a, y: 2}\nc: *b\n").unwrap();
        assert_eq!(v["c"], json!({"y": "2", "x": "1"}));
    }

    #[test]
    fn scalars() {
        let v = parse(
            "a: 1.10\nb: 8080:80\nc: 0x1F\nd: 1e3\ne: yes\nf: off\ng: null\nh: Null\ni: NULL\nj: ~\nk:\nl: true\nm: True\nn: TRUE\n\
             o: false\np: False\nq: FALSE\nr: 'true'\ns: \"null\"\nt: nULL\nu: tRUE\nv: -1\nw: .inf\n",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"a": "1.10", "b": "8080:80", "c": "0x1F", "d": "1e3", "e": "yes", "f": "off", "g": null, "h": null, "i": null,
                "j": null, "k": null, "l": true, "m": true, "n": true, "o": false, "p": false, "q": false, "r": "true", "s": "null",
                "t": "nULL", "u": "tRUE", "v": "-1", "w": ".inf"})
        );
        let v = parse(r#"["a\tb\"", 'it''s', "", plain text]"#).unwrap();
        assert_eq!(v, json!(["a\tb\"", "it's", "", "plain text"]));
        let v = parse(
            "- \"a\\tb\\n\\\"c\\\" \\u00e9 \\x41\"\n- 'it''s \\n'\n- \"\"\n- ''\n- |-\n  lit\n   more\n- >-\n  fold\n  ed\n\n  para\n",
        )
        .unwrap();
        assert_eq!(v, json!(["a\tb\n\"c\" é A", "it's \\n", "", "", "lit\n more", "fold ed\npara"]));
        // A lone document marker is null; a document may be a scalar.
        assert_eq!(parse("---\n").unwrap(), Value::Null);
        assert_eq!(parse("--- hello\n...\n").unwrap(), json!("hello"));
        // A byte order mark and CRLF line ends are fine.
        assert_eq!(parse("\u{feff}a: b\r\nc: |\r\n  x\r\n  y\r\n").unwrap(), json!({"a": "b", "c": "x\ny\n"}));
        // Keys are their text.
        assert_eq!(parse("~: a\ntrue: b\n1: c\n'': d\n").unwrap(), json!({"~": "a", "true": "b", "1": "c", "": "d"}));
    }

    #[test]
    fn flow_collections() {
        let v = parse("a: [1, [2, {b: c}], {}, []]\nd: {e: [f], 'g h': \"i\", j: }\n").unwrap();
        assert_eq!(v, json!({"a": ["1", ["2", {"b": "c"}], {}, []], "d": {"e": ["f"], "g h": "i", "j": null}}));
    }

    #[test]
    fn tags() {
        let v = parse("a: !!str 1\nb: !!int 2\nc: !!float 1.5\nd: !!bool true\ne: !!null ~\nf: !!str true\ng: !!map {x: 1}\nh: !!seq [1]\ni: ! 3\nj: !<tag:yaml.org,2002:str> ~\n")
            .unwrap();
        assert_eq!(
            v,
            json!({"a": "1", "b": "2", "c": "1.5", "d": true, "e": null, "f": "true", "g": {"x": "1"}, "h": ["1"], "i": "3", "j": "~"})
        );
        assert_eq!(err("a:\n  b: !foo x\n"), "unsupported tag !foo at line 2, column 6");
        assert_eq!(err("a: !!binary aGk=\n"), "unsupported tag !!binary at line 1, column 4");
        assert_eq!(err("a: !!map x\n"), "unsupported tag !!map at line 1, column 4");
        assert_eq!(err("a: !!str [x]\n"), "unsupported tag !!str at line 1, column 4");
        assert_eq!(err("a: !<x:y> 1\n"), "unsupported tag !<x:y> at line 1, column 4");
        assert_eq!(err("!!set\n? a\n"), "unsupported tag !!set at line 1, column 1");
    }

    #[test]
    fn aliases() {
        let v = parse("a: &x [1, {b: 2}]\nc: *x\nd: &k key\n*k : f\n&n ~: g\nh: *n\n").unwrap();
        assert_eq!(v, json!({"a": ["1", {"b": "2"}], "c": ["1", {"b": "2"}], "d": "key", "key": "f", "~": "g", "h": null}));
        // An anchor redefined: aliases see the latest one.
        assert_eq!(parse("a: &x 1\nb: &x 2\nc: *x\n").unwrap()["c"], "2");
        assert_eq!(err("a: *nope\n"), "line 1, column 4: while parsing node, found unknown anchor");
        assert_eq!(err("a: &x [1, *x]\n"), "the alias at line 1, column 11 refers to a node that contains it");
        assert_eq!(err("a: &x [1]\n*x : 2\n"), "the key at line 2, column 1 is a mapping or a list; keys must be scalars");
    }

    #[test]
    fn billion_laughs() {
        let mut text = String::from("a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for pair in names.windows(2) {
            let (prev, name) = (pair[0], pair[1]);
            text.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let e = err(&text);
        assert!(
            e.starts_with("the file expands to more than 100000 values (aliases): check the anchors and aliases near line 5, column"),
            "{e}"
        );
        // Text grows too: 20 copies of a 1 MiB string.
        let big = "x".repeat(1024 * 1024);
        let text = format!("a: &a {big}\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n");
        assert!(err(&text).starts_with("the file expands to more than 16777216 bytes of text (aliases)"));
        // Nested anchors are not counted over and over.
        let mut text = String::new();
        for i in 0..DEPTH_MAX {
            text.push_str(&format!("&a{i} ["));
        }
        text.push('x');
        text.push_str(&"]".repeat(DEPTH_MAX));
        parse(&text).unwrap();
    }

    #[test]
    fn depth() {
        let ok = format!("{}x{}", "[".repeat(DEPTH_MAX), "]".repeat(DEPTH_MAX));
        parse(&ok).unwrap();
        let deep = format!("{}x{}", "[".repeat(DEPTH_MAX + 1), "]".repeat(DEPTH_MAX + 1));
        assert_eq!(err(&deep), "mappings and lists nest more than 64 levels deep at line 1, column 65");
        // Far deeper input stops at the limit (saphyr's own for flow collections), without recursion.
        assert_eq!(err(&"[".repeat(1_000_000)), "line 1, column 256: recursion limit exceeded");
        assert_eq!(err(&"- ".repeat(1_000_000)), "mappings and lists nest more than 64 levels deep at line 1, column 129");
        let mut block = String::new();
        for i in 0..70 {
            block.push_str(&" ".repeat(i));
            block.push_str("a:\n");
        }
        assert_eq!(err(&block), "mappings and lists nest more than 64 levels deep at line 65, column 65");
        // Aliases count: 40 levels under 40 more.
        let inner = format!("{}x{}", "[".repeat(40), "]".repeat(40));
        assert_eq!(
            err(&format!("a: &a {inner}\nb: {}*a{}\n", "[".repeat(30), "]".repeat(30))),
            format!("mappings and lists nest more than 64 levels deep at line 2, column {}", 34)
        );
    }

    #[test]
    fn structure_errors() {
        assert_eq!(err("a: 1\nb: 2\na: 3\n"), "duplicate key \"a\" at line 3, column 1");
        assert_eq!(err("a: {x: 1, \"x\": 2}"), "duplicate key \"x\" at line 1, column 11");
        assert_eq!(err("? [a]\n: b\n"), "the key at line 1, column 3 is a mapping or a list; keys must be scalars");
        assert_eq!(
            err("a:\n  <<: x\n"),
            "the merge key << at line 2, column 3 needs a mapping or a list of mappings, as in `<<: *defaults`"
        );
        assert_eq!(
            err("a:\n  <<: [{}, x]\n"),
            "the merge key << at line 2, column 3 needs a mapping or a list of mappings, as in `<<: *defaults`"
        );
        assert_eq!(err(""), "the file is empty");
        assert_eq!(err("# just a comment\n\n"), "the file is empty");
        assert_eq!(err("a: 1\n---\nb: 2\n"), "the file holds more than one YAML document; use one per file");
        assert_eq!(err("a: 1\n---\n"), "the file holds more than one YAML document; use one per file");
        let big = "a".repeat(TEXT_BYTES_MAX + 1);
        assert_eq!(err(&big), "the file is 4194305 bytes, more than the 4194304 allowed");
    }

    #[test]
    fn scanner_errors() {
        assert_eq!(
            err("services:\n  web:\n    image: x\n   ports: y\n"),
            "line 4, column 4: while parsing a block mapping, did not find expected key"
        );
        assert_eq!(err("a: 1\n b: 2\n"), "line 2, column 3: mapping values are not allowed in this context");
        assert_eq!(err("a: [1, 2\n"), "line 2, column 1: while parsing a flow sequence, expected ',' or ']'");
        assert_eq!(err("a: \"x\n"), "line 1, column 4: while scanning a quoted scalar, found unexpected end of stream");
        assert_eq!(err("a:\n\t- b\n"), "line 2, column 2: tabs disallowed within this context (block indentation)");
        assert_eq!(
            err("services:\n  web:\n    image: x\n      ports: y\n"),
            "line 4, column 12: mapping values are not allowed in this context"
        );
    }

    /// Deterministic pseudo-random numbers (xorshift64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn mutations_do_not_panic() {
        let sample: Vec<char> = "x-d: &d\n  restart: always\n  labels: {a: 1, 'b': \"c\\n\"}\nservices:\n  web:\n    <<: *d\n    image: \"nginx:${TAG:-1}\"\n    ports: [\"80:80\", 443]\n    command: |\n      run\n    env:\n      - A=1\n      - ? k\n        : v\n"
            .chars()
            .collect();
        let pieces = [
            "\n",
            " ",
            "  ",
            ":",
            "- ",
            "[",
            "]",
            "{",
            "}",
            ",",
            "&a",
            "*a",
            "&b ",
            "*b",
            "<<",
            "!!str",
            "!x",
            "'",
            "\"",
            "|",
            ">",
            "#",
            "?",
            "---",
            "...",
            "%YAML 1.2\n",
            "%TAG ! tag:x:\n",
            "\\",
            "\t",
            "é",
            "\u{feff}",
            "!<a>",
            "@",
            "`",
            "\r",
            "\0",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut ok = 0usize;
        for _ in 0..20_000 {
            let mut text = sample.clone();
            for _ in 0..1 + rng.below(4) {
                let pos = rng.below(text.len() + 1).min(text.len());
                match rng.below(4) {
                    0 => {
                        let end = (pos + rng.below(8)).min(text.len());
                        text.drain(pos..end);
                    }
                    1 | 2 => {
                        let piece = pieces[rng.below(pieces.len())];
                        text.splice(pos..pos, piece.chars());
                    }
                    _ => {
                        let from = rng.below(text.len());
                        let len = rng.below(20).min(text.len() - from);
                        let copy: Vec<char> = text[from..from + len].to_vec();
                        text.splice(pos..pos, copy);
                    }
                }
            }
            let text: String = text.into_iter().collect();
            if parse(&text).is_ok() {
                ok += 1;
            }
        }
        assert!(ok > 100, "only {ok} mutations parsed");
    }
}
