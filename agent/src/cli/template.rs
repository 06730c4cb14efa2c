//! Docker's `--format` templates: the part of Go's `text/template` that
//! `docker ... ls/ps/inspect --format` uses, evaluated over `serde_json::Value`.
//!
//! This module owns a recursive-descent parser (scanning the source directly)
//! into a small AST, a tree-walking evaluator, Go's printing of values and
//! Docker's functions (`templates.basicFunctions` plus Go's builtins). Callers
//! prepare a `--format` value as Docker does, parse once and render per item:
//!
//! ```text
//! let (table, f) = split_table(format).map_or((false, format), |rest| (true, rest));
//! let t = Template::parse(&prepare(f))?;          // prepare: Docker's `\t`/`\n` unescaping
//! if table { header = t.render_header(&headers) }  // headers: {"ID": "ID", "Name": "NAME"}
//! for item in items { line = t.render(&item)? }    // then tab-align header and lines
//! ```
//!
//! Objects stand for Go maps: `range` and printing visit keys in sorted order,
//! a missing key is an error (Docker's `missingkey=error` for raw data), and
//! `index` of a missing key is "" in an object of strings (Go's
//! `map[string]string`), null otherwise; `json` keeps the object's key order.
//! JSON null prints as Go's nil, `<nil>`. Not supported: `define`, `template`,
//! `block`, `call`, `slice`, `html`, `js`, `urlquery`; `upper` and `title`
//! change ASCII letters only.
#![allow(dead_code)] // The callers (ls/ps/inspect --format) are wired in next.

use serde_json::{Map, Number, Value};
use std::cmp::Ordering;
use std::fmt::Write;

/// Longest template source accepted.
pub const MAX_SOURCE: usize = 64 * 1024;
/// Deepest nesting of control actions and parentheses.
pub const MAX_DEPTH: usize = 100;
/// Largest output, or string value, one render may produce.
pub const MAX_OUTPUT: usize = 16 << 20;
/// Most actions and range iterations one render may evaluate.
pub const MAX_STEPS: usize = 10_000_000;

/// A template that failed to parse or to execute, worded as Go and Docker do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `template parsing error: template: :LINE: MESSAGE`.
    #[error("template parsing error: {0}")]
    Parse(String),
    /// `template: :LINE:COL: executing "" at <NODE>: MESSAGE` (Docker's `ls`
    /// and `ps` print it after `template parsing error: ` too).
    #[error("{0}")]
    Exec(String),
}

type Res<T> = Result<T, TemplateError>;
type Span = (usize, usize);

// Go's builtins and Docker's functions; from `json` on, Docker's header
// rendering makes them return their first argument.
const FUNCS: [&str; 22] = [
    "and", "or", "not", "len", "index", "print", "printf", "println", "eq", "ne", "lt", "le", "gt", "ge", "pad", "json", "split", "join",
    "title", "lower", "upper", "truncate",
];
const HEADER_IDENTITY: usize = 15;
// Fewest arguments * 8 + most (0: no limit).
const ARITY: [u8; 22] = [8, 8, 9, 9, 8, 0, 8, 0, 8, 18, 18, 18, 18, 18, 27, 9, 18, 18, 9, 9, 9, 18];
const KEYWORDS: [&str; 10] = ["if", "range", "with", "else", "end", "break", "continue", "define", "template", "block"];
const IF: u8 = 0;
const RANGE: u8 = 1;
const WITH: u8 = 2;
static EMPTY: Value = Value::String(String::new());

/// A parsed template.
pub struct Template {
    src: String,
    nodes: Vec<Node>,
}

enum Node {
    /// A span of the source.
    Text(Span),
    Out(Pipe),
    /// `if`, `range` or `with` (an index in `KEYWORDS`), body and else.
    Ctl(u8, Pipe, Vec<Node>, Vec<Node>),
    Break,
    Continue,
}

struct Pipe {
    /// Variables declared or assigned: spans of `$name`.
    decl: Vec<Span>,
    assign: bool,
    cmds: Vec<Vec<Arg>>,
    span: Span,
}

/// An operand: a term and the fields chained on it (`.A.B`, `$x.A`, `(p).A`).
struct Arg {
    term: Term,
    /// The span of `.A.B`, empty for none.
    fields: Span,
    span: Span,
}

enum Term {
    Dot,
    /// A constant; `nil` is `Lit(Null)`.
    Lit(Value),
    /// The span of `$name`.
    Var(Span),
    Func(usize),
    Pipe(Box<Pipe>),
}

/// Docker's `table` prefix: the rest of the format, trimmed of spaces as Docker
/// does, when `format` starts with `table`.
pub fn split_table(format: &str) -> Option<&str> {
    format.strip_prefix("table").map(|rest| rest.trim_matches(' '))
}

/// Docker's preparation of a `--format` value before parsing: spaces trimmed at
/// both ends, and the two-character sequences `\t` and `\n` made a tab and a
/// newline. [`Template::parse`] does not do this itself.
pub fn prepare(format: &str) -> String {
    format.trim_matches(' ').replace("\\t", "\t").replace("\\n", "\n")
}

impl Template {
    /// Parses `src` with Docker's functions.
    pub fn parse(src: &str) -> Res<Template> {
        if src.len() > MAX_SOURCE {
            return Err(TemplateError::Parse(format!("template: too long: {} bytes (limit {MAX_SOURCE})", src.len())));
        }
        let mut p = Parser { s: src, pos: 0, trim: false, vars: Vec::new(), depth: 0, ranges: 0 };
        match p.list()? {
            (nodes, Stop::Eof) => Ok(Template { src: src.into(), nodes }),
            (_, Stop::End) => p.fail(p.pos, "unexpected {{end}}"),
            _ => p.fail(p.pos, "unexpected {{else}}"),
        }
    }

    /// Executes the template with `data` as `.` and `$`.
    pub fn render(&self, data: &Value) -> Res<String> {
        let (out, r) = self.run(data, false);
        r.map(|_| out)
    }

    /// Docker's table header: the template executed over the column headers
    /// (`{"Name": "NAME", ..}`), a missing key rendering as "", and `json`,
    /// `split`, `join`, `title`, `lower`, `upper` and `truncate` returning their
    /// first argument. As Docker, an error ends the header where it occurred.
    pub fn render_header(&self, headers: &Map<String, Value>) -> String {
        self.run(&Value::Object(headers.clone()), true).0
    }

    fn run(&self, data: &Value, header: bool) -> (String, Res<Flow>) {
        let mut ex = Exec { src: &self.src, root: data, out: String::new(), vars: Vec::new(), steps: 0, header };
        let r = ex.list(&self.nodes, data);
        (ex.out, r)
    }
}

// ---- parser ----

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Identifier characters: ASCII letters, digits and `_`, and any non-ASCII.
fn word(s: &str) -> usize {
    s.find(|c: char| !(c == '_' || c.is_ascii_alphanumeric() || !c.is_ascii())).unwrap_or(s.len())
}

fn line(src: &str, pos: usize) -> usize {
    1 + src.as_bytes()[..pos].iter().filter(|&&b| b == b'\n').count()
}

fn perr(src: &str, at: usize, msg: &str) -> TemplateError {
    TemplateError::Parse(format!("template: :{}: {msg}", line(src, at)))
}

/// Length of the right delimiter at the start of `s`: 4 for ` -}}`, 2 for `}}`.
fn right_delim(s: &str) -> usize {
    let b = s.as_bytes();
    if b.len() >= 4 && is_space(b[0] as char) && &b[1..4] == b"-}}" {
        4
    } else {
        2 * s.starts_with("}}") as usize
    }
}

/// Token kinds inside an action; `P` is punctuation: `|`, `(`, `)`, `,`, `=`,
/// `:` (for `:=`) or another ASCII mark, `Close` is `}}` or ` -}}`.
#[derive(Clone, Copy, PartialEq)]
enum K {
    Word,
    Field,
    Dot,
    Var,
    Lit,
    P(u8),
    Close,
}

/// A token, where it starts and ends, and whether space precedes it.
#[derive(Clone, Copy)]
struct Tok {
    k: K,
    at: usize,
    end: usize,
    space: bool,
}

enum Stop {
    Eof,
    End,
    /// `{{else}}`, or `{{else if`/`{{else with` with the keyword taken.
    Else(Option<u8>),
}

struct Parser<'s> {
    s: &'s str,
    pos: usize,
    /// The last action ended with ` -}}`: trim the text after it.
    trim: bool,
    vars: Vec<&'s str>,
    depth: usize,
    ranges: usize,
}

impl<'s> Parser<'s> {
    fn fail<T>(&self, at: usize, msg: &str) -> Res<T> {
        Err(perr(self.s, at, msg))
    }

    fn unexpected<T>(&self, t: &Tok, ctx: &str) -> Res<T> {
        Err(self.unexpected_err(t, ctx))
    }

    /// Go's `unexpected TOKEN in CONTEXT`.
    fn unexpected_err(&self, t: &Tok, ctx: &str) -> TemplateError {
        let v = if t.k == K::Close { "}}" } else { &self.s[t.at..t.end] };
        let short: String = v.chars().take(10).collect();
        let shown = match t.k {
            K::Word if KEYWORDS.contains(&v) => format!("<{v}>"),
            _ => go_quote(&short) + if short.len() < v.len() { "..." } else { "" },
        };
        perr(self.s, t.at, &format!("unexpected {shown} in {ctx}"))
    }

    fn deeper(&mut self, at: usize) -> Res<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail(at, &format!("nesting deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    /// The next token of an action.
    fn tok(&mut self) -> Res<Tok> {
        let (s, b) = (self.s, self.s.as_bytes());
        let (start, mut i) = (self.pos, self.pos);
        while b.get(i).is_some_and(|&c| is_space(c as char)) && right_delim(&s[i..]) != 4 {
            i += 1;
        }
        let (at, close) = (i, right_delim(&s[i..]));
        let Some(c) = s[i..].chars().next() else { return self.fail(i, "unclosed action") };
        let next = b.get(i + 1).copied().unwrap_or(0);
        i += if close > 0 { close } else { c.len_utf8() };
        let k = match c {
            _ if close > 0 => K::Close,
            '"' | '\'' | '`' => {
                let q = c as u8;
                while b.get(i).is_some_and(|&x| x != q && (q == b'`' || x != b'\n')) {
                    i += if q != b'`' && b[i] == b'\\' && b.get(i + 1).is_some_and(|&x| x != b'\n') { 2 } else { 1 };
                }
                if b.get(i) != Some(&q) {
                    let what = ["raw quoted string", "quoted string", "character constant"][(q != b'`') as usize + (q == b'\'') as usize];
                    return self.fail(at, &format!("unterminated {what}"));
                }
                i += 1;
                if lit(&s[at..i]).is_none() {
                    return self.fail(at, "invalid syntax");
                }
                K::Lit
            }
            '$' => {
                i += word(&s[i..]);
                K::Var
            }
            '.' if !next.is_ascii_digit() => {
                i += word(&s[i..]);
                if i == at + 1 {
                    K::Dot
                } else {
                    K::Field
                }
            }
            '.' | '+' | '-' | '0'..='9' => {
                // Go's number syntax; a sign continues it after an exponent mark.
                while b
                    .get(i)
                    .is_some_and(|&x| x.is_ascii_alphanumeric() || b"_.".contains(&x) || b"+-".contains(&x) && b"eEpP".contains(&b[i - 1]))
                {
                    i += 1;
                }
                if number(&s[at..i]).is_none() {
                    return self.fail(at, &format!("bad number syntax: {}", go_quote(&s[at..i])));
                }
                K::Lit
            }
            _ if word(&s[at..]) > 0 => {
                i = at + word(&s[at..]);
                K::Word
            }
            ':' if next != b'=' => return self.fail(at, "expected :="),
            c if c.is_ascii_graphic() => {
                i += (c == ':') as usize;
                K::P(c as u8)
            }
            c => return self.fail(at, &format!("unrecognized character in action: {}", go_u(c))),
        };
        if matches!(k, K::Var | K::Field | K::Dot | K::Word) {
            if let Some(c) = s[i..].chars().next().filter(|&c| !is_space(c) && !".,|:()".contains(c) && !s[i..].starts_with("}}")) {
                return self.fail(i, &format!("bad character {}", go_u(c)));
            }
        }
        self.pos = i;
        Ok(Tok { k, at, end: i, space: at > start })
    }

    fn peek(&mut self) -> Res<Tok> {
        let pos = self.pos;
        let t = self.tok();
        self.pos = pos;
        t
    }

    fn is_word(&self, t: &Tok, w: &str) -> bool {
        t.k == K::Word && &self.s[t.at..t.end] == w
    }

    /// Nodes up to EOF, `{{end}}` or `{{else}}`.
    fn list(&mut self) -> Res<(Vec<Node>, Stop)> {
        let (s, b, mut nodes) = (self.s, self.s.as_bytes(), Vec::new());
        loop {
            let open = s[self.pos..].find("{{").map_or(s.len(), |o| self.pos + o);
            let ltrim = b.get(open + 2) == Some(&b'-') && b.get(open + 3).is_some_and(|&c| is_space(c as char));
            let mut text = (self.pos, open);
            if self.trim {
                text.0 = open - s[text.0..open].trim_start_matches(is_space).len();
            }
            if ltrim {
                text.1 = text.0 + s[text.0..open].trim_end_matches(is_space).len();
            }
            if text.0 < text.1 {
                nodes.push(Node::Text(text));
            }
            (self.pos, self.trim) = (open, false);
            if open == s.len() {
                return Ok((nodes, Stop::Eof));
            }
            self.pos += 2 + 2 * ltrim as usize;
            if s[self.pos..].starts_with("/*") {
                let Some(k) = s[self.pos + 2..].find("*/") else { return self.fail(self.pos, "unclosed comment") };
                self.pos += k + 4;
                let n = right_delim(&s[self.pos..]);
                if n == 0 {
                    return self.fail(self.pos, "comment ends before closing delimiter");
                }
                (self.pos, self.trim) = (self.pos + n, n == 4);
                continue;
            }
            match self.action()? {
                Ok(n) => nodes.push(n),
                Err(end) => return Ok((nodes, end)),
            }
        }
    }

    fn close(&mut self, ctx: &str) -> Res<()> {
        let t = self.tok()?;
        if t.k != K::Close {
            return self.unexpected(&t, ctx);
        }
        self.trim = t.end - t.at == 4;
        Ok(())
    }

    /// An action after `{{`: a node, or the end of a list.
    fn action(&mut self) -> Res<Result<Node, Stop>> {
        let t = self.peek()?;
        let Some(kw) = KEYWORDS.iter().position(|k| self.is_word(&t, k)) else {
            let p = self.pipeline("command")?;
            self.close("command")?;
            return Ok(Ok(Node::Out(p)));
        };
        self.pos = t.end;
        let word = KEYWORDS[kw];
        Ok(match kw {
            0..=2 => Ok(self.control(kw as u8)?),
            3 => {
                let t = self.peek()?;
                let chain = [IF, WITH].into_iter().find(|&k| self.is_word(&t, KEYWORDS[k as usize]));
                match chain {
                    Some(_) => self.pos = t.end,
                    None => self.close("else")?,
                }
                Err(Stop::Else(chain))
            }
            4 => self.close("end").map(|_| Err(Stop::End))?,
            5 | 6 if self.ranges > 0 => self.close(word).map(|_| Ok(if kw == 5 { Node::Break } else { Node::Continue }))?,
            5 | 6 => return self.fail(t.at, &format!("{{{{{word}}}}} outside {{{{range}}}}")),
            _ => return self.fail(t.at, &format!("{{{{{word}}}}} is not supported")),
        })
    }

    fn control(&mut self, kind: u8) -> Res<Node> {
        self.deeper(self.pos)?;
        let (mark, name, range) = (self.vars.len(), KEYWORDS[kind as usize], kind == RANGE);
        let pipe = self.pipeline(name)?;
        self.close(name)?;
        self.ranges += range as usize;
        let (body, end) = self.list()?;
        self.ranges -= range as usize;
        let els = match end {
            Stop::End => Vec::new(),
            Stop::Else(Some(k)) if k == kind && !range => vec![self.control(k)?],
            Stop::Else(Some(k)) => return self.fail(self.pos, &format!("unexpected <{}> in input", KEYWORDS[k as usize])),
            Stop::Else(None) => match self.list()? {
                (els, Stop::End) => els,
                (_, Stop::Else(_)) => return self.fail(self.pos, "expected end; found {{else}}"),
                _ => return self.fail(self.pos, "unexpected EOF"),
            },
            Stop::Eof => return self.fail(self.pos, "unexpected EOF"),
        };
        self.vars.truncate(mark);
        self.depth -= 1;
        Ok(Node::Ctl(kind, pipe, body, els))
    }

    /// `declarations? command ('|' command)*`, up to `}}`, or `)` in parentheses.
    fn pipeline(&mut self, ctx: &str) -> Res<Pipe> {
        let mut t = self.peek()?;
        let (save, start, mut decl) = (self.pos, t.at, Vec::new());
        while t.k == K::Var {
            decl.push((t.at, t.end));
            self.pos = t.end;
            t = self.peek()?;
            match t.k {
                K::P(b',') if ctx == "range" && decl.len() == 1 => self.pos = t.end,
                K::P(b',') => return self.fail(t.at, &format!("too many declarations in {ctx}")),
                _ => break,
            }
            t = self.peek()?;
            if t.k != K::Var {
                return self.fail(t.at, "range can only initialize variables");
            }
        }
        let assign = t.k == K::P(b'=');
        if !decl.is_empty() && (assign || t.k == K::P(b':')) {
            self.pos = t.end;
            let s = self.s;
            if let Some(v) = decl.iter().map(|v| &s[v.0..v.1]).find(|v| assign && !self.vars.contains(v)) {
                return self.fail(t.at, &format!("undefined variable {}", go_quote(v)));
            }
            if !assign {
                self.vars.extend(decl.iter().map(|v| &s[v.0..v.1]));
            }
        } else if decl.len() > 1 {
            return self.fail(t.at, "range can only initialize variables");
        } else {
            (decl, self.pos) = (Vec::new(), save);
        }
        let mut cmds: Vec<Vec<Arg>> = Vec::new();
        let t = loop {
            let t = self.peek()?;
            if matches!(t.k, K::Close | K::P(b')')) {
                break t;
            }
            let cmd = self.command()?;
            if !cmds.is_empty() && bare(&cmd[0]) {
                return self.fail(t.at, &format!("non executable command in pipeline stage {}", cmds.len() + 1));
            }
            cmds.push(cmd);
        };
        let paren = ctx == "parenthesized pipeline";
        if paren != (t.k == K::P(b')')) {
            return self.fail(t.at, if paren { "unclosed left paren" } else { "unexpected right paren" });
        }
        match cmds.last().and_then(|c| c.last()) {
            Some(a) => Ok(Pipe { decl, assign, span: (start, a.span.1), cmds }),
            None => self.fail(t.at, &format!("missing value for {ctx}")),
        }
    }

    /// Space-separated operands up to `|`, `}}` or `)`.
    fn command(&mut self) -> Res<Vec<Arg>> {
        let mut args = Vec::new();
        loop {
            let Some(a) = self.operand()? else {
                let t = self.peek()?;
                return self.unexpected(&t, if args.is_empty() { "command" } else { "operand" });
            };
            args.push(a);
            let t = self.peek()?;
            match t.k {
                K::Close | K::P(b')') => return Ok(args),
                K::P(b'|') => {
                    self.pos = t.end;
                    return Ok(args);
                }
                _ if t.space => {}
                _ => return self.unexpected(&t, "operand"),
            }
        }
    }

    /// A term (constant, function, `.`, `.Field`, `$x`, `(pipeline)`) and its fields.
    fn operand(&mut self) -> Res<Option<Arg>> {
        let (s, t) = (self.s, self.peek()?);
        let (w, mut end, field) = (&s[t.at..t.end], t.end, t.k == K::Field);
        let term = match t.k {
            K::Word if KEYWORDS.contains(&w) => return Ok(None),
            K::Word if w == "true" || w == "false" => Term::Lit(Value::Bool(w == "true")),
            K::Word if w == "nil" => Term::Lit(Value::Null),
            K::Word => match FUNCS.iter().position(|f| *f == w) {
                Some(f) => Term::Func(f),
                None => return self.fail(t.at, &format!("function {} not defined", go_quote(w))),
            },
            K::Dot | K::Field => Term::Dot,
            K::Var if w == "$" || self.vars.contains(&w) => Term::Var((t.at, t.end)),
            K::Var => return self.fail(t.at, &format!("undefined variable {}", go_quote(w))),
            K::Lit => Term::Lit(lit(w).unwrap_or_default()),
            K::P(b'(') => {
                self.pos = t.end;
                self.deeper(t.at)?;
                let p = self.pipeline("parenthesized pipeline")?;
                self.depth -= 1;
                end = self.tok()?.end;
                Term::Pipe(Box::new(p))
            }
            _ => return Ok(None),
        };
        self.pos = end;
        let mut a = Arg { term, fields: if field { (t.at, end) } else { (end, end) }, span: (t.at, end) };
        loop {
            let f = self.peek()?;
            if f.k != K::Field || f.space {
                return Ok(Some(a));
            }
            if bare(&a) {
                return self.fail(f.at, &format!("unexpected . after term {}", go_quote(&s[a.span.0..a.span.1])));
            }
            a.fields = (if a.fields.0 < a.fields.1 { a.fields.0 } else { f.at }, f.end);
            (a.span.1, self.pos) = (f.end, f.end);
        }
    }
}

/// A constant or `.` alone: no fields can follow it and it cannot take arguments.
fn bare(a: &Arg) -> bool {
    matches!(a.term, Term::Lit(_)) || matches!(a.term, Term::Dot) && a.fields.0 == a.fields.1
}

/// Go's `%#U`.
fn go_u(c: char) -> String {
    format!("U+{:04X}", c as u32) + &if c.is_control() { String::new() } else { format!(" '{c}'") }
}

/// The value of a literal: a quoted, raw or character constant, or a number.
fn lit(t: &str) -> Option<Value> {
    let body = t.get(1..t.len() - 1).unwrap_or("");
    match t.as_bytes()[0] {
        b'`' => Some(body.into()),
        b'"' => unquote(body).map(Value::String),
        b'\'' => unquote(body).filter(|s| s.chars().count() == 1).and_then(|s| s.chars().next()).map(|c| Value::from(c as u32)),
        _ => number(t),
    }
}

/// The body of a Go quoted string or character constant, escapes resolved.
fn unquote(s: &str) -> Option<String> {
    let (mut out, mut cs) = (String::new(), s.chars());
    while let Some(c) = cs.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = cs.next()?;
        out.push(match "abfnrtv\\\"'".find(e) {
            Some(k) => "\x07\x08\x0c\n\r\t\x0b\\\"'".as_bytes()[k] as char,
            None => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => return None,
                };
                let mut v = 0;
                for _ in 0..n {
                    v = v * 16 + cs.next()?.to_digit(16)?;
                }
                // A \x escape is a byte: only an ASCII one makes a character.
                char::from_u32(v).filter(|c| e != 'x' || c.is_ascii())?
            }
        });
    }
    Some(out)
}

/// A Go number literal: integers (with 0x, 0o, 0b, 0 prefixes and `_`) or floats.
fn number(t: &str) -> Option<Value> {
    let (neg, u) = t.strip_prefix('-').map_or((false, t.strip_prefix('+').unwrap_or(t)), |u| (true, u));
    let u = u.replace('_', "");
    let (digits, radix) = match u.get(..2).unwrap_or("") {
        "0x" | "0X" => (&u[2..], 16),
        "0o" | "0O" => (&u[2..], 8),
        "0b" | "0B" => (&u[2..], 2),
        _ if u.len() > 1 && u.starts_with('0') && !u.contains(['.', 'e', 'E']) => (&u[1..], 8),
        _ => (&u[..], 10),
    };
    match u64::from_str_radix(digits, radix) {
        Ok(n) if neg => 0i64.checked_sub_unsigned(n).map(Value::from),
        Ok(n) => Some(n.into()),
        Err(_) => Number::from_f64(u.parse::<f64>().ok().filter(|f| f.is_finite())? * if neg { -1.0 } else { 1.0 }).map(Value::Number),
    }
}

// ---- evaluator ----

#[derive(PartialEq)]
enum Flow {
    Next,
    Break,
    Continue,
}

struct Exec<'a> {
    src: &'a str,
    root: &'a Value,
    out: String,
    vars: Vec<(&'a str, Value)>,
    steps: usize,
    header: bool,
}

impl<'a> Exec<'a> {
    fn fail(&self, (pos, end): (usize, usize), msg: &str) -> TemplateError {
        let col = pos - self.src[..pos].rfind('\n').map_or(0, |n| n + 1);
        TemplateError::Exec(format!("template: :{}:{col}: executing \"\" at <{}>: {msg}", line(self.src, pos), &self.src[pos..end]))
    }

    fn step(&mut self) -> Res<()> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(TemplateError::Exec(format!("template: execution takes more than {MAX_STEPS} steps")));
        }
        if self.out.len() > MAX_OUTPUT {
            return Err(TemplateError::Exec(format!("template: output is over the limit of {MAX_OUTPUT} bytes")));
        }
        Ok(())
    }

    fn list(&mut self, nodes: &'a [Node], dot: &Value) -> Res<Flow> {
        for n in nodes {
            self.step()?;
            match n {
                Node::Text((a, b)) => self.out.push_str(&self.src[*a..*b]),
                Node::Out(p) => {
                    let v = self.pipe(p, dot, true)?;
                    if p.decl.is_empty() {
                        write_val(&mut self.out, &v, false);
                    }
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
                Node::Ctl(kind, p, body, els) => {
                    let mark = self.vars.len();
                    let v = self.pipe(p, dot, *kind != RANGE)?;
                    let flow = match (*kind, truth(&v)) {
                        (RANGE, _) => self.range(p, &v, body, els, dot)?,
                        (_, false) => self.list(els, dot)?,
                        (IF, true) => self.list(body, dot)?,
                        _ => self.list(body, &v)?,
                    };
                    self.vars.truncate(mark);
                    if flow != Flow::Next {
                        return Ok(flow);
                    }
                }
            }
        }
        self.step()?;
        Ok(Flow::Next)
    }

    fn range(&mut self, p: &'a Pipe, v: &Value, body: &'a [Node], els: &'a [Node], dot: &Value) -> Res<Flow> {
        let items: Vec<(Value, &Value)> = match v {
            Value::Array(a) => a.iter().enumerate().map(|(i, e)| (i.into(), e)).collect(),
            Value::Object(m) => sorted(m).map(|(k, e)| (k.as_str().into(), e)).collect(),
            Value::Null => Vec::new(),
            v => return Err(self.fail(p.span, &format!("range can't iterate over {}", fmt_str(v)))),
        };
        if items.is_empty() {
            return self.list(els, dot);
        }
        for (k, e) in items {
            self.step()?;
            let mark = self.vars.len();
            if let [key, _] = p.decl[..] {
                self.bind(key, k, p.assign);
            }
            if let Some(&name) = p.decl.last() {
                self.bind(name, e.clone(), p.assign);
            }
            let flow = self.list(body, e)?;
            self.vars.truncate(mark);
            if flow == Flow::Break {
                break;
            }
        }
        Ok(Flow::Next)
    }

    fn bind(&mut self, (a, b): Span, v: Value, assign: bool) {
        let name = &self.src[a..b];
        match self.vars.iter_mut().rev().find(|x| x.0 == name) {
            Some(slot) if assign => slot.1 = v,
            _ => self.vars.push((name, v)),
        }
    }

    fn pipe(&mut self, p: &'a Pipe, dot: &Value, bind: bool) -> Res<Value> {
        let mut v = None;
        for c in &p.cmds {
            v = Some(self.cmd(c, dot, v)?);
        }
        let v = v.unwrap_or_default();
        for &d in p.decl.iter().filter(|_| bind) {
            self.bind(d, v.clone(), p.assign);
        }
        Ok(v)
    }

    /// A command; `fin` is the value piped in, its last argument.
    fn cmd(&mut self, c: &'a [Arg], dot: &Value, fin: Option<Value>) -> Res<Value> {
        let (head, args) = (&c[0], c.len() > 1 || fin.is_some());
        let fields = &self.src[head.fields.0..head.fields.1];
        match (&head.term, fields.rfind('.').map(|i| &fields[i + 1..])) {
            (Term::Func(f), None) => self.call(*f, (head.span.0, c[c.len() - 1].span.1), &c[1..], dot, fin),
            (_, Some(f)) if args => Err(self.fail(head.span, &format!("{f} is not a method but has arguments"))),
            (_, None) if args => {
                Err(self.fail(head.span, &format!("can't give argument to non-function {}", &self.src[head.span.0..head.span.1])))
            }
            (Term::Lit(Value::Null), _) => Err(self.fail(head.span, "nil is not a command")),
            _ => self.arg(head, dot),
        }
    }

    fn arg(&mut self, a: &'a Arg, dot: &Value) -> Res<Value> {
        let owned;
        let mut v = match &a.term {
            Term::Dot => dot,
            Term::Lit(l) => l,
            Term::Var((x, y)) => self.vars.iter().rev().find(|v| v.0 == &self.src[*x..*y]).map_or(self.root, |v| &v.1),
            Term::Func(f) => {
                owned = self.call(*f, a.span, &[], dot, None)?;
                &owned
            }
            Term::Pipe(p) => {
                owned = self.pipe(p, dot, true)?;
                &owned
            }
        };
        let mut rest = &self.src[a.fields.0..a.fields.1];
        while let Some(r) = rest.strip_prefix('.') {
            let (f, r) = r.split_at(r.find('.').unwrap_or(r.len()));
            rest = r;
            v = match v {
                Value::Object(m) => match m.get(f) {
                    Some(x) => x,
                    None if self.header => &EMPTY,
                    None => return Err(self.fail(a.span, &format!("map has no entry for key {}", go_quote(f)))),
                },
                Value::Null => return Err(self.fail(a.span, &format!("nil pointer evaluating interface {{}}.{f}"))),
                v => return Err(self.fail(a.span, &format!("can't evaluate field {f} in type {}", go_type(v)))),
            };
        }
        Ok(v.clone())
    }

    fn call(&mut self, f: usize, span: (usize, usize), args: &'a [Arg], dot: &Value, fin: Option<Value>) -> Res<Value> {
        let (name, n, min, max) = (FUNCS[f], args.len() + fin.is_some() as usize, ARITY[f] / 8, ARITY[f] % 8);
        if n < min as usize || max > 0 && n > max as usize {
            let least = if max == 0 { "at least " } else { "" };
            return Err(self.fail(span, &format!("wrong number of args for {name}: want {least}{min} got {n}")));
        }
        let mut vals = Vec::with_capacity(n);
        for a in args {
            let v = self.arg(a, dot)?;
            // and, or: the first falsy (and), truthy (or) argument decides.
            if f < 2 && truth(&v) == (f == 1) {
                return Ok(v);
            }
            vals.push(v);
        }
        if f < 2 {
            return Ok(fin.or(vals.pop()).unwrap_or_default());
        }
        vals.extend(fin);
        if self.header && f >= HEADER_IDENTITY {
            return Ok(vals.swap_remove(0));
        }
        let v = builtin(name, &vals).and_then(|v| room(v.as_str().unwrap_or(""), 0).map(|_| v));
        v.map_err(|m| self.fail(span, &if m.starts_with("wrong type") { m } else { format!("error calling {name}: {m}") }))
    }
}

/// An object's entries in key order, as Go visits a map (without sorting code).
fn sorted(m: &Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
    let mut last: Option<&str> = None;
    std::iter::from_fn(move || {
        let next = m.iter().filter(|e| last.is_none_or(|l| e.0.as_str() > l)).min_by(|a, b| a.0.cmp(b.0))?;
        last = Some(next.0);
        Some(next)
    })
}

// ---- functions ----

fn truth(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// Go's type name for a value decoded from JSON (numbers as int or float64).
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn want(v: &Value, t: &str) -> String {
    format!("wrong type for value; expected {t}; got {}", go_type(v))
}

fn room(s: &str, more: usize) -> Result<(), String> {
    if s.len().saturating_add(more) > MAX_OUTPUT {
        return Err(format!("result is over the limit of {MAX_OUTPUT} bytes"));
    }
    Ok(())
}

fn builtin(name: &str, a: &[Value]) -> Result<Value, String> {
    let s = |i: usize| a[i].as_str().ok_or_else(|| want(&a[i], "string"));
    let int = |i: usize| a[i].as_i64().ok_or_else(|| want(&a[i], "int"));
    Ok(match name {
        "not" => (!truth(&a[0])).into(),
        "len" => match &a[0] {
            Value::String(s) => s.len().into(),
            Value::Array(v) => v.len().into(),
            Value::Object(m) => m.len().into(),
            Value::Null => return Err("len of untyped nil".into()),
            v => return Err(format!("len of type {}", go_type(v))),
        },
        "index" => index(a)?,
        "print" | "println" => sprint(a, name == "println")?.into(),
        "printf" => printf(s(0)?, &a[1..])?.into(),
        "eq" if a.len() < 2 => return Err("missing argument for comparison".into()),
        "eq" => a[1..].iter().try_fold(false, |r, b| Ok::<_, String>(r || equal(&a[0], b)?))?.into(),
        "ne" => (!equal(&a[0], &a[1])?).into(),
        "lt" => (order(&a[0], &a[1])? == Ordering::Less).into(),
        "le" => (order(&a[0], &a[1])? != Ordering::Greater).into(),
        "gt" => (order(&a[0], &a[1])? == Ordering::Greater).into(),
        "ge" => (order(&a[0], &a[1])? != Ordering::Less).into(),
        "json" => {
            let mut o = String::new();
            write_val(&mut o, &a[0], true);
            o.into()
        }
        "split" if s(1)?.is_empty() => s(0)?.chars().map(|c| Value::from(c.to_string())).collect(),
        "split" => s(0)?.split(s(1)?).map(Value::from).collect(),
        "join" => {
            let (sep, mut o) = (s(1)?, String::new());
            let items = match &a[0] {
                Value::Array(v) => &v[..],
                Value::Null => &[],
                v => return Err(want(v, "[]string")),
            };
            for (i, v) in items.iter().enumerate() {
                room(&o, sep.len())?;
                o.push_str(if i > 0 { sep } else { "" });
                write_val(&mut o, v, false);
            }
            o.into()
        }
        "title" => {
            // strings.Title: a letter after a separator is upper-cased.
            let mut prev = ' ';
            let f = |c: char| {
                let sep = if prev.is_ascii() { !(prev.is_ascii_alphanumeric() || prev == '_') } else { prev.is_whitespace() };
                prev = c;
                if sep {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            };
            s(0)?.chars().map(f).collect::<String>().into()
        }
        "lower" => s(0)?.to_lowercase().into(),
        "upper" => s(0)?.to_ascii_uppercase().into(),
        "pad" => {
            let (v, l, r) = (s(0)?, int(1)?, int(2)?);
            if l < 0 || r < 0 {
                return Err("strings: negative Repeat count".into());
            }
            room(v, (l as usize).saturating_add(r as usize))?;
            if v.is_empty() { String::new() } else { " ".repeat(l as usize) + v + &" ".repeat(r as usize) }.into()
        }
        "truncate" => match int(1)? {
            n if n < 0 => return Err(format!("slice bounds out of range [:{n}]")),
            n => s(0)?.chars().take(n as usize).collect::<String>().into(),
        },
        _ => Value::Null,
    })
}

/// Go's `index`: arrays and strings by integer, objects by string key.
fn index(a: &[Value]) -> Result<Value, String> {
    let mut cur = &a[0];
    for (i, k) in a[1..].iter().enumerate() {
        cur = match (cur, k) {
            (Value::Array(_) | Value::String(_), Value::Number(n)) => {
                let len = cur.as_array().map_or_else(|| cur.as_str().map_or(0, str::len), Vec::len);
                let j = n.as_i64().ok_or_else(|| format!("cannot index slice/array with type {}", go_type(k)))?;
                if j < 0 || j as usize >= len {
                    return Err(format!("index out of range: {j}"));
                }
                match cur {
                    Value::String(s) if i + 2 == a.len() => return Ok(s.as_bytes()[j as usize].into()),
                    Value::String(_) => return Err("can't index item of type uint8".into()),
                    _ => &cur[j as usize],
                }
            }
            (Value::Array(_) | Value::String(_), k) => return Err(format!("cannot index slice/array with type {}", go_type(k))),
            (Value::Object(m), Value::String(key)) => match m.get(key) {
                Some(v) => v,
                // A missing key gives the zero value: "" in a map of strings.
                None if m.values().all(Value::is_string) => &EMPTY,
                None => &Value::Null,
            },
            (Value::Object(_), k) => return Err(format!("value has type {}; should be string", go_type(k))),
            (Value::Null, _) => return Err("index of untyped nil".into()),
            (v, _) => return Err(format!("can't index item of type {}", go_type(v))),
        };
    }
    Ok(cur.clone())
}

fn equal(a: &Value, b: &Value) -> Result<bool, String> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => Ok(order(a, b)? == Ordering::Equal),
        (Value::Null, _) | (_, Value::Null) => Ok(a == b),
        _ if std::mem::discriminant(a) == std::mem::discriminant(b) => Ok(a == b),
        _ => Err("incompatible types for comparison".into()),
    }
}

fn order(a: &Value, b: &Value) -> Result<Ordering, String> {
    let int = |n: &Number| n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Ok(match (int(x), int(y)) {
            (Some(i), Some(j)) => i.cmp(&j),
            _ => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
        }),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ if std::mem::discriminant(a) == std::mem::discriminant(b) => Err("invalid type for comparison".into()),
        _ => Err("incompatible types for comparison".into()),
    }
}

/// Go's `fmt.Sprint` (a space between operands when neither is a string) or
/// `fmt.Sprintln` (spaces always, and a newline).
fn sprint(a: &[Value], ln: bool) -> Result<String, String> {
    let mut o = String::new();
    for (i, v) in a.iter().enumerate() {
        room(&o, 1)?;
        if i > 0 && (ln || !(v.is_string() || a[i - 1].is_string())) {
            o.push(' ');
        }
        write_val(&mut o, v, false);
    }
    if ln {
        o.push('\n');
    }
    Ok(o)
}

/// Go's `fmt.Sprintf` for the verbs s v d q t x X f F g and %, the flags
/// `-+0 `, width and precision; others print as Go's `%!z(type=value)`.
fn printf(f: &str, a: &[Value]) -> Result<String, String> {
    let (mut o, mut n, mut cs) = (String::new(), 0, f.chars().peekable());
    while let Some(c) = cs.next() {
        if c != '%' {
            o.push(c);
            continue;
        }
        let mut flags = [false; 5]; // - + 0 space #
        while let Some(i) = cs.peek().and_then(|c| "-+0 #".find(*c)) {
            flags[i] = true;
            cs.next();
        }
        let width = digits(&mut cs).unwrap_or(0);
        let prec = cs.next_if_eq(&'.').map(|_| digits(&mut cs).unwrap_or(0));
        room(&o, width.max(prec.unwrap_or(0)))?;
        let Some(verb) = cs.next() else {
            o.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            o.push('%');
            continue;
        }
        let Some(v) = a.get(n) else {
            o.extend(['%', '!', verb]);
            o.push_str("(MISSING)");
            continue;
        };
        n += 1;
        let (mut s, mut neg) = (String::new(), None);
        match (verb, v) {
            ('v' | 'd' | 'x' | 'X' | 'f' | 'F' | 'g', Value::Number(x)) if !(x.is_f64() && "dxX".contains(verb)) => {
                let f = x.as_f64().unwrap_or(0.0);
                neg = Some(f < 0.0);
                let _ = match (verb, x.as_u64().or(x.as_i64().map(i64::unsigned_abs))) {
                    ('f' | 'F', _) => write!(s, "{:.*}", prec.unwrap_or(6), f.abs()),
                    ('x' | 'X', Some(m)) => write!(s, "{m:x}"),
                    (_, Some(m)) => write!(s, "{m}"),
                    _ => {
                        go_float(&mut s, f.abs(), false);
                        Ok(())
                    }
                };
            }
            ('s' | 'v', Value::String(x)) => s.push_str(x),
            ('q', Value::String(x)) => s = go_quote(x),
            ('x' | 'X', Value::String(x)) => x.bytes().for_each(|b| s.push_str(&format!("{b:02x}"))),
            ('t' | 'v', Value::Bool(_)) | ('s' | 'v', Value::Array(_) | Value::Object(_)) | ('v', Value::Null) => {
                write_val(&mut s, v, false)
            }
            _ => {
                o.extend(['%', '!', verb, '(']);
                bad_arg(&mut o, v);
                o.push(')');
                continue;
            }
        }
        if verb == 'X' {
            s.make_ascii_uppercase();
        }
        if let (None, Some(p), false) = (neg, prec, verb == 'q') {
            s = s.chars().take(p).collect();
        }
        let sign = match neg {
            Some(true) => "-",
            Some(false) if flags[1] => "+",
            Some(false) if flags[3] => " ",
            _ => "",
        };
        let fill = width.saturating_sub(sign.len() + s.chars().count());
        let (left, zeros, right) = match (flags[0], flags[2] && neg.is_some()) {
            (true, _) => (0, 0, fill),
            (_, true) => (0, fill, 0),
            _ => (fill, 0, 0),
        };
        o.push_str(&" ".repeat(left));
        o.push_str(sign);
        o.push_str(&"0".repeat(zeros));
        o.push_str(&s);
        o.push_str(&" ".repeat(right));
    }
    if n < a.len() {
        o.push_str("%!(EXTRA ");
        for (i, v) in a[n..].iter().enumerate() {
            o.push_str(if i > 0 { ", " } else { "" });
            bad_arg(&mut o, v);
        }
        o.push(')');
    }
    Ok(o)
}

fn digits(cs: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut v = None;
    while let Some(d) = cs.peek().and_then(|c| c.to_digit(10)) {
        v = Some(v.unwrap_or(0usize).saturating_mul(10).saturating_add(d as usize));
        cs.next();
    }
    v
}

fn bad_arg(o: &mut String, v: &Value) {
    if !v.is_null() {
        o.push_str(go_type(v));
        o.push('=');
    }
    write_val(o, v, false);
}

// ---- printing ----

/// Go's `fmt.Print` of a value decoded from JSON, or with `json` Docker's
/// `json` function: Go's encoder with HTML escaping off (Docker's
/// `SetEscapeHTML(false)`), compact, the object's key order kept.
fn write_val(o: &mut String, v: &Value, json: bool) {
    let [open, sep, close] = if json { ["{", ",", "}"] } else { ["map[", " ", "]"] };
    match v {
        Value::Null => o.push_str(if json { "null" } else { "<nil>" }),
        Value::Bool(b) => o.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => go_num(o, n, json),
        Value::String(s) if json => json_str(o, s),
        Value::String(s) => o.push_str(s),
        Value::Array(a) => {
            o.push('[');
            for (i, e) in a.iter().enumerate() {
                o.push_str(if i > 0 { sep } else { "" });
                write_val(o, e, json);
            }
            o.push(']');
        }
        Value::Object(m) => {
            o.push_str(open);
            let entries: Vec<_> = if json { m.iter().collect() } else { sorted(m).collect() };
            for (i, (k, e)) in entries.into_iter().enumerate() {
                o.push_str(if i > 0 { sep } else { "" });
                if json {
                    json_str(o, k);
                } else {
                    o.push_str(k);
                }
                o.push(':');
                write_val(o, e, json);
            }
            o.push_str(close);
        }
    }
}

fn fmt_str(v: &Value) -> String {
    let mut o = String::new();
    write_val(&mut o, v, false);
    o
}

fn go_num(o: &mut String, n: &Number, json: bool) {
    match n.as_f64() {
        Some(f) if n.is_f64() => go_float(o, f, json),
        _ => {
            let _ = write!(o, "{n}");
        }
    }
}

/// Go's `%v` of a float64 (strconv's shortest `%g`: `1e+06` from exponent 6
/// and below -4), or `json.Marshal`'s (`1e-07` written `1e-7` below 1e-6,
/// `1e+21` from 1e21). The shortest digits come from serde_json's formatting.
fn go_float(o: &mut String, f: f64, json: bool) {
    let s = Number::from_f64(f.abs()).map_or(String::new(), |n| n.to_string());
    let (m, e) = s.split_once(['e', 'E']).unwrap_or((&s, "0"));
    let (ip, fp) = m.split_once('.').unwrap_or((m, ""));
    let all = [ip, fp].concat();
    let d = all.trim_start_matches('0');
    // The value is 0.d times ten to the power `point`.
    let point = d.len() as i64 - fp.len() as i64 + e.parse::<i64>().unwrap_or(0);
    let d = d.trim_end_matches('0');
    if f.is_sign_negative() {
        o.push('-');
    }
    let x = point - 1;
    if d.is_empty() {
        o.push('0');
    } else if if json { !(-6..21).contains(&x) } else { !(-4..6).contains(&x) } {
        let _ = write!(
            o,
            "{}{}{}e{}{}{}",
            &d[..1],
            [".", ""][(d.len() == 1) as usize],
            &d[1..],
            ["+", "-"][(x < 0) as usize],
            ["", "0"][(!json && x.abs() < 10) as usize],
            x.abs()
        );
    } else if point <= 0 {
        o.push_str("0.");
        o.push_str(&"0".repeat(-point as usize));
        o.push_str(d);
    } else {
        let p = point as usize;
        o.push_str(&d[..p.min(d.len())]);
        o.push_str(&"0".repeat(p.saturating_sub(d.len())));
        if p < d.len() {
            o.push('.');
            o.push_str(&d[p..]);
        }
    }
}

fn json_str(o: &mut String, s: &str) {
    o.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => o.extend(['\\', c]),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\x08' => o.push_str("\\b"),
            '\x0c' => o.push_str("\\f"),
            '\0'..='\x1f' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
}

/// Go's `strconv.Quote` for the characters a format carries.
fn go_quote(s: &str) -> String {
    let mut o = String::from('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => o.extend(['\\', c]),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if c.is_control() => {
                let ascii = c.is_ascii();
                let _ = write!(o, "\\{}{:0w$x}", ["u", "x"][ascii as usize], c as u32, w = 4 - 2 * ascii as usize);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data() -> Value {
        json!({
            "ID": "abc123", "Name": "web", "Mode": "replicated", "Image": "nginx:alpine",
            "Names": ["web", "web-alias"],
            "Labels": {"com.example.vendor": "ACME", "com.example.version": "1.0"},
            "Networks": [{"IPAddress": "10.0.0.2"}, {"IPAddress": "10.0.0.3"}],
            "Spec": {"Labels": {"desc": "<a&b>"}},
            "Count": 3, "Ratio": 0.5, "Big": 1e21, "Neg": -7, "Nil": null, "Empty": [], "Flag": true,
            "NetworkSettings": {"Ports": {"8787/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8787"}], "80/tcp": [{"HostPort": "8080"}]}}
        })
    }

    fn render(src: &str, data: &Value) -> Result<String, String> {
        Template::parse(src).and_then(|t| t.render(data)).map_err(|e| e.to_string())
    }

    #[test]
    fn docker_examples_render_as_docker() {
        let cases = [
            ("{{.Name}}: {{.Mode}}", "web: replicated"),
            ("{{json .Networks}}", r#"[{"IPAddress":"10.0.0.2"},{"IPAddress":"10.0.0.3"}]"#),
            // Docker's json turns Go's HTML escaping off: <, > and & stay.
            ("{{json .Spec.Labels}}", r#"{"desc":"<a&b>"}"#),
            ("{{json .Labels}}", r#"{"com.example.vendor":"ACME","com.example.version":"1.0"}"#),
            (r#"{{json "q\"\\\n\t\u2028"}}"#, r#""q\"\\\n\t\u2028""#),
            (r#"{{join .Names " , "}}"#, "web , web-alias"),
            // docker inspect examples.
            (r#"{{(index (index .NetworkSettings.Ports "8787/tcp") 0).HostPort}}"#, "8787"),
            ("{{range $p, $conf := .NetworkSettings.Ports}}{{$p}} -> {{(index $conf 0).HostPort}} {{end}}", "80/tcp -> 8080 8787/tcp -> 8787 "),
            ("{{json .NetworkSettings}}", r#"{"Ports":{"8787/tcp":[{"HostIp":"0.0.0.0","HostPort":"8787"}],"80/tcp":[{"HostPort":"8080"}]}}"#),
            ("{{range .Networks}}{{.IPAddress}} {{end}}", "10.0.0.2 10.0.0.3 "),
            (r#"{{lower "HELLO"}} {{upper .Name}} {{title "hello wORLD-wide_x"}}"#, "hello WEB Hello WORLD-Wide_x"),
            (
                r#"{{index .Labels "com.example.vendor"}}|{{index .Labels "nope"}}|{{index .Names 1}}|{{index .Networks 0 "IPAddress"}}"#,
                "ACME||web-alias|10.0.0.2",
            ),
            ("{{if .Flag}}yes{{else}}no{{end}} {{if .Empty}}yes{{else}}no{{end}} {{if .Nil}}y{{else}}n{{end}}", "yes no n"),
            ("{{if eq .Count 1}}one{{else if eq .Count 3}}three{{else}}many{{end}}", "three"),
            (r#"{{printf "%-10s|" .Name}}"#, "web       |"),
            (
                r#"{{printf "%5s|%d|%v|%q|%t|%x|%05d|%.2f|%+d|%X|%.2s|%v" "ab" 42 .Names "a\"b" true 255 -42 3.14159 5 "hi" "xyz" .Ratio}}"#,
                r#"   ab|42|[web web-alias]|"a\"b"|true|ff|-0042|3.14|+5|6869|xy|0.5"#,
            ),
            (r#"{{printf "%d %s" "x"}}|{{printf "%s" "a" 1}}|{{printf "%z" nil}}|{{printf "100%%"}}"#, "%!d(string=x) %!s(MISSING)|a%!(EXTRA int=1)|%!z(<nil>)|100%"),
            (
                "{{.Names}} {{.Labels}} {{.Count}} {{.Ratio}} {{.Big}} {{.Neg}} {{.Nil}} {{.Flag}} {{.Empty}} {{.Networks}}",
                "[web web-alias] map[com.example.vendor:ACME com.example.version:1.0] 3 0.5 1e+21 -7 <nil> true [] [map[IPAddress:10.0.0.2] map[IPAddress:10.0.0.3]]",
            ),
            ("{{1e6}} {{123456.0}} {{0.00001}} {{0.0001}} {{1.5}} {{0x1F}} {{-3}} {{'a'}} {{1_000}} {{017}}", "1e+06 123456 1e-05 0.0001 1.5 31 -3 97 1000 15"),
            ("{{json 1e21}} {{json 0.0000001}} {{json 1.0}} {{json 2.5}} {{json .Count}} {{json .Nil}} {{json .Flag}}", "1e+21 1e-7 1 2.5 3 null true"),
            ("a  {{- .Name -}}  b|a {{- /* c */ -}} b|x{{/* hi */}}y|{{- 3}}|{{-3}}", "awebb|ab|xy|3|-3"),
            (r#"{{$n := .Name}}{{$n}}-{{$n = "x"}}{{$n}}"#, "web-x"),
            ("{{range $i, $e := .Names}}{{$i}}={{$e}}@{{$.Name}};{{end}}", "0=web@web;1=web-alias@web;"),
            ("{{range $k, $v := .Labels}}{{$k}}={{$v}},{{end}}", "com.example.vendor=ACME,com.example.version=1.0,"),
            ("{{range $e := .Names}}{{$e}}{{end}}|{{range .Empty}}x{{else}}none{{end}}|{{range .Nil}}x{{end}}", "webweb-alias|none|"),
            ("{{with .Spec.Labels}}{{.desc}}{{end}} {{with .Nil}}x{{else}}empty{{end}} {{with $x := .Name}}{{$x}}{{end}}", "<a&b> empty web"),
            (r#"{{range .Names}}{{if eq . "web"}}{{continue}}{{end}}{{.}}{{break}}{{end}}"#, "web-alias"),
            (r#"{{or .Nil "dflt"}} {{and .Flag .Name}} {{and .Nil .Missing}} {{or 0 ""}}|{{.Nil | or "p"}}"#, "dflt web <nil> |p"),
            (r#"{{not .Flag}} {{len .Names}} {{len "héllo"}} {{len .Labels}}"#, "false 2 6 2"),
            (r#"{{lt 1 2}} {{ge "b" "a"}} {{ne .Name "x"}} {{eq .Count 1 2 3}} {{le 2.5 2}} {{gt .Count -1}} {{eq .Nil nil}}"#, "true true true true false true true"),
            (r#"{{index (split .Image ":") 1}} {{range split "a,b" ","}}[{{.}}]{{end}} {{split "ab" ""}}"#, "alpine [a][b] [a b]"),
            (r#"{{pad .Name 2 1}}|{{truncate .Image 5}}|{{pad "" 3 3}}|{{truncate "héllo" 2}}"#, "  web |nginx||hé"),
            (r#"{{print "a" 1 2 "b"}}|{{println "a" 1}}"#, "a1 2b|a 1\n"),
            (r#"{{.Name | upper | printf "%s!"}} {{(index .Networks 0).IPAddress}} {{.Name | printf "%s-%s" "x"}}"#, "WEB! 10.0.0.2 x-web"),
            ("{{\"a\\tb\"}}|{{`raw\\n`}}|{{print nil}}|{{true}}|{{ .Name\n}}", "a\tb|raw\\n|<nil>|true|web"),
        ];
        for (src, want) in cases {
            assert_eq!(render(src, &data()).as_deref(), Ok(want), "{src}");
        }
    }

    #[test]
    fn table_header_and_rows() {
        let format = r"table {{.ID}}\t{{.Name}}";
        let rest = split_table(format).unwrap();
        assert_eq!(rest, r"{{.ID}}\t{{.Name}}");
        let t = Template::parse(&prepare(rest)).unwrap();
        let headers = json!({"ID": "ID", "Name": "NAME"});
        let headers = headers.as_object().unwrap();
        assert_eq!(t.render_header(headers), "ID\tNAME");
        assert_eq!(t.render(&data()).unwrap(), "abc123\tweb");
        assert_eq!(split_table("{{.ID}}"), None);
        assert_eq!(split_table("table"), Some(""));
        assert_eq!(prepare(r"  {{.A}}\t{{.B}}\n "), "{{.A}}\t{{.B}}\n");
        // Header functions return their argument, pad still pads, a missing key is "".
        let t = Template::parse("{{upper .Name}}|{{json .Name}}|{{pad .ID 1 1}}|{{.Unknown}}|{{truncate .Name 2}}").unwrap();
        assert_eq!(t.render_header(headers), "NAME|NAME| ID ||NAME");
        // As Docker, an error ends the header where it happened.
        assert_eq!(Template::parse("{{.Name}} {{.Name.X}} after").unwrap().render_header(headers), "NAME ");
    }

    #[test]
    fn errors_are_worded_as_go() {
        let parse = [
            ("{{.Name", "template: :1: unclosed action"),
            ("a\n\n{{.A", "template: :3: unclosed action"),
            ("{{foo .Name}}", r#"template: :1: function "foo" not defined"#),
            ("{{if .Flag}}x", "template: :1: unexpected EOF"),
            ("{{end}}", "template: :1: unexpected {{end}}"),
            ("{{else}}", "template: :1: unexpected {{else}}"),
            ("{{if 1}}{{else}}{{else}}{{end}}", "template: :1: expected end; found {{else}}"),
            ("{{$x}}", r#"template: :1: undefined variable "$x""#),
            ("{{/* x }}", "template: :1: unclosed comment"),
            ("{{/* x */ }}", "template: :1: comment ends before closing delimiter"),
            ("{{.A \"x}}", "template: :1: unterminated quoted string"),
            (r#"{{"\q"}}"#, "template: :1: invalid syntax"),
            ("{{.A | 3}}", "template: :1: non executable command in pipeline stage 2"),
            ("{{break}}", "template: :1: {{break}} outside {{range}}"),
            ("{{}}", "template: :1: missing value for command"),
            ("{{if}}{{end}}", "template: :1: missing value for if"),
            ("{{(.A}}", "template: :1: unclosed left paren"),
            ("{{.A)}}", "template: :1: unexpected right paren"),
            ("{{.A #}}", r##"template: :1: unexpected "#" in operand"##),
            ("{{.A=1}}", "template: :1: bad character U+003D '='"),
            ("{{1.2.3}}", r#"template: :1: bad number syntax: "1.2.3""#),
            (r#"{{"x".A}}"#, r#"template: :1: unexpected . after term "\"x\"""#),
            (r#"{{template "x"}}"#, "template: :1: {{template}} is not supported"),
        ];
        for (src, want) in parse {
            assert_eq!(render(src, &data()), Err(format!("template parsing error: {want}")), "{src}");
        }
        let exec = [
            ("{{.Foo}}", r#"template: :1:2: executing "" at <.Foo>: map has no entry for key "Foo""#),
            ("a\n {{.Foo}}", r#"template: :2:3: executing "" at <.Foo>: map has no entry for key "Foo""#),
            ("{{.Name.X}}", r#"template: :1:2: executing "" at <.Name.X>: can't evaluate field X in type string"#),
            ("{{.Nil.X}}", r#"template: :1:2: executing "" at <.Nil.X>: nil pointer evaluating interface {}.X"#),
            ("{{index .Names 5}}", r#"template: :1:2: executing "" at <index .Names 5>: error calling index: index out of range: 5"#),
            ("{{join .Names}}", r#"template: :1:2: executing "" at <join .Names>: wrong number of args for join: want 2 got 1"#),
            ("{{and}}", r#"template: :1:2: executing "" at <and>: wrong number of args for and: want at least 1 got 0"#),
            ("{{lower 3}}", r#"template: :1:2: executing "" at <lower 3>: wrong type for value; expected string; got int"#),
            (r#"{{"x" | .Name}}"#, r#"template: :1:8: executing "" at <.Name>: Name is not a method but has arguments"#),
            ("{{range .Name}}{{end}}", r#"template: :1:8: executing "" at <.Name>: range can't iterate over web"#),
            ("{{eq .Name 1}}", r#"template: :1:2: executing "" at <eq .Name 1>: error calling eq: incompatible types for comparison"#),
            ("{{len 3}}", r#"template: :1:2: executing "" at <len 3>: error calling len: len of type int"#),
            ("{{nil}}", r#"template: :1:2: executing "" at <nil>: nil is not a command"#),
        ];
        for (src, want) in exec {
            assert_eq!(render(src, &data()), Err(want.to_string()), "{src}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let long = "x".repeat(MAX_SOURCE + 1);
        assert_eq!(render(&long, &data()), Err("template parsing error: template: too long: 65537 bytes (limit 65536)".into()));
        let nest = |n: usize| format!("{}x{}", "{{if 1}}".repeat(n), "{{end}}".repeat(n));
        assert_eq!(render(&nest(MAX_DEPTH), &data()).as_deref(), Ok("x"));
        assert!(render(&nest(MAX_DEPTH + 1), &data()).unwrap_err().ends_with("nesting deeper than 100"));
        let parens = |n: usize| format!("{{{{{}1{}}}}}", "(".repeat(n), ")".repeat(n));
        assert_eq!(render(&parens(MAX_DEPTH - 1), &data()).as_deref(), Ok("1"));
        assert!(render(&parens(MAX_DEPTH + 1), &data()).unwrap_err().ends_with("nesting deeper than 100"));
        let list = json!(vec![0; 30]);
        let over = "template: output is over the limit of 16777216 bytes";
        assert_eq!(render(r#"{{range .}}{{pad "x" 0 1000000}}{{end}}"#, &list), Err(over.into()));
        let doubled = r#"{{$s := "ab"}}{{range .}}{{$s = printf "%s%s" $s $s}}{{end}}"#;
        assert!(render(doubled, &list).unwrap_err().ends_with("error calling printf: result is over the limit of 16777216 bytes"));
        assert!(render(r#"{{pad "x" 0 100000000}}"#, &list).unwrap_err().ends_with("result is over the limit of 16777216 bytes"));
        assert!(render(r#"{{printf "%999999999d" 1}}"#, &list).unwrap_err().ends_with("result is over the limit of 16777216 bytes"));
        let steps = "{{range $}}{{range $}}{{range $}}{{range $}}{{end}}{{end}}{{end}}{{end}}";
        assert_eq!(render(steps, &json!(vec![0; 100])), Err("template: execution takes more than 10000000 steps".into()));
    }

    #[test]
    fn garbage_never_panics() {
        const PIECES: [&str; 56] = [
            "{{",
            "}}",
            "{{- ",
            " -}}",
            "{{/*",
            "*/}}",
            ".",
            ".Name",
            ".Names",
            ".Labels",
            "$",
            "$x",
            "$x := ",
            ":=",
            "=",
            "|",
            "(",
            ")",
            ",",
            "\"s\"",
            "\"\\",
            "`r`",
            "'c'",
            "'",
            "1",
            "-2.5e3",
            "0x",
            "if ",
            "else ",
            "end",
            "range ",
            "with ",
            "break",
            "continue",
            "index ",
            "printf ",
            "\"%d%s%v%-5q%\" ",
            "json ",
            "len ",
            "eq ",
            "and ",
            "or ",
            "pad ",
            "split ",
            "join ",
            " ",
            "\n",
            "é",
            "\\",
            "nil",
            "true",
            "#",
            "{",
            "}",
            "-",
            "x",
        ];
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (d, h) = (data(), json!({"Name": "NAME"}));
        let mut rendered = 0;
        for _ in 0..30_000 {
            let mut src = String::new();
            for _ in 0..rnd(24) {
                src.push_str(PIECES[rnd(PIECES.len())]);
            }
            if let Ok(t) = Template::parse(&src) {
                rendered += t.render(&d).is_ok() as usize;
                t.render_header(h.as_object().unwrap());
            }
            let raw: String = (0..rnd(16)).map(|_| char::from_u32(rnd(0x300) as u32).unwrap_or('?')).collect();
            let _ = render(&raw, &d);
        }
        assert!(rendered > 1000, "{rendered}");
    }
}
