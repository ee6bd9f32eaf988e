//! JSON, the little the status needs: a writer that keeps track of commas and escapes
//! strings (RFC 8259: `"`, `\` and every control character), and a bounded reader for what
//! answers on the loopback port (any local process could). Pure; the reader never panics
//! (fuzzed by `status_json`), refuses nesting deeper than [`MAX_DEPTH`] and keeps numbers as
//! their text, so a `u64` counter reads back exactly.

use std::fmt::Write as _;

/// Deepest nesting the reader accepts.
pub const MAX_DEPTH: usize = 32;

/// Writes one JSON text: values, and objects and arrays opened and closed in order.
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
    /// Per open container: whether it holds an element already.
    open: Vec<bool>,
    /// A key was written; its value comes next (no comma).
    after_key: bool,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    /// The text written, with a final newline.
    pub fn finish(mut self) -> String {
        self.out.push('\n');
        self.out
    }

    fn before_value(&mut self) {
        if self.after_key {
            self.after_key = false;
        } else if let Some(has) = self.open.last_mut() {
            if *has {
                self.out.push(',');
            }
            *has = true;
        }
    }

    /// An object member's name; its value must come next.
    pub fn key(&mut self, name: &str) -> &mut Writer {
        self.before_value();
        escape_into(&mut self.out, name);
        self.out.push(':');
        self.after_key = true;
        self
    }

    pub fn open_object(&mut self) -> &mut Writer {
        self.before_value();
        self.out.push('{');
        self.open.push(false);
        self
    }

    pub fn close_object(&mut self) -> &mut Writer {
        self.open.pop();
        self.out.push('}');
        self
    }

    pub fn open_array(&mut self) -> &mut Writer {
        self.before_value();
        self.out.push('[');
        self.open.push(false);
        self
    }

    pub fn close_array(&mut self) -> &mut Writer {
        self.open.pop();
        self.out.push(']');
        self
    }

    pub fn string(&mut self, s: &str) -> &mut Writer {
        self.before_value();
        escape_into(&mut self.out, s);
        self
    }

    pub fn number(&mut self, n: u64) -> &mut Writer {
        self.before_value();
        let _ = write!(self.out, "{n}");
        self
    }

    pub fn boolean(&mut self, b: bool) -> &mut Writer {
        self.before_value();
        self.out.push_str(if b { "true" } else { "false" });
        self
    }

    pub fn null(&mut self) -> &mut Writer {
        self.before_value();
        self.out.push_str("null");
        self
    }

    /// A string, or `null` for `None`.
    pub fn opt_string(&mut self, s: Option<&str>) -> &mut Writer {
        match s {
            Some(s) => self.string(s),
            None => self.null(),
        }
    }

    /// A number, or `null` for `None`.
    pub fn opt_number(&mut self, n: Option<u64>) -> &mut Writer {
        match n {
            Some(n) => self.number(n),
            None => self.null(),
        }
    }
}

/// `s` as a JSON string, quotes included.
pub fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                // Every C0 and C1 control, and DEL: unambiguous whatever reads it.
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON value as read. Numbers keep their text.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Value>),
    /// Members in their order; a repeated name keeps every copy, `get` finds the first.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// The member `name` of an object.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A non-negative integer that fits a `u64`, exactly.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(text) => text.parse().ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> &[Value] {
        match self {
            Value::Array(items) => items,
            _ => &[],
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// `get(name)` as a string.
    pub fn str_at(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// `get(name)` as a `u64`.
    pub fn u64_at(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(Value::as_u64)
    }
}

/// Why a text is not JSON, with the byte offset where reading stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonError {
    pub offset: usize,
    pub what: &'static str,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.offset)
    }
}

impl std::error::Error for JsonError {}

/// Reads one JSON value, with only whitespace around it.
pub fn parse(text: &str) -> Result<Value, JsonError> {
    let mut r = Reader {
        b: text.as_bytes(),
        i: 0,
    };
    let v = r.value(0)?;
    r.space();
    if r.i != r.b.len() {
        return Err(r.err("text after the value"));
    }
    Ok(v)
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn err(&self, what: &'static str) -> JsonError {
        JsonError {
            offset: self.i,
            what,
        }
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, word: &[u8]) -> bool {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deep"));
        }
        self.space();
        match self.b.get(self.i) {
            None => Err(self.err("a value is missing")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) if self.eat(b"true") => Ok(Value::Bool(true)),
            Some(_) if self.eat(b"false") => Ok(Value::Bool(false)),
            Some(_) if self.eat(b"null") => Ok(Value::Null),
            Some(_) => Err(self.err("not a value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.i += 1;
        let mut members = Vec::new();
        self.space();
        if self.eat(b"}") {
            return Ok(Value::Object(members));
        }
        loop {
            self.space();
            if self.b.get(self.i) != Some(&b'"') {
                return Err(self.err("a member name is missing"));
            }
            let name = self.string()?;
            self.space();
            if !self.eat(b":") {
                return Err(self.err("':' is missing"));
            }
            let value = self.value(depth + 1)?;
            members.push((name, value));
            self.space();
            if self.eat(b",") {
                continue;
            }
            if self.eat(b"}") {
                return Ok(Value::Object(members));
            }
            return Err(self.err("',' or '}' is missing"));
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.i += 1;
        let mut items = Vec::new();
        self.space();
        if self.eat(b"]") {
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.space();
            if self.eat(b",") {
                continue;
            }
            if self.eat(b"]") {
                return Ok(Value::Array(items));
            }
            return Err(self.err("',' or ']' is missing"));
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.i;
        self.eat(b"-");
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("a digit is missing")),
        }
        if self.eat(b".") && self.digits() == 0 {
            return Err(self.err("a digit is missing after '.'"));
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("a digit is missing in the exponent"));
            }
        }
        // Only ASCII was consumed, so this slice is on character boundaries.
        let text = String::from_utf8_lossy(&self.b[start..self.i]).into_owned();
        Ok(Value::Number(text))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let Some(digits) = self.b.get(self.i..self.i + 4) else {
            return Err(self.err("\\u needs 4 hex digits"));
        };
        let mut n = 0u32;
        for &d in digits {
            let v = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.err("\\u needs 4 hex digits"))?;
            n = n * 16 + v;
        }
        self.i += 4;
        Ok(n)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.i += 1;
        let mut out = String::new();
        loop {
            // Copy the run of plain bytes at once (the input is a `str`: UTF-8 stays whole).
            let start = self.i;
            while let Some(&b) = self.b.get(self.i) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.push_str(&String::from_utf8_lossy(&self.b[start..self.i]));
            match self.b.get(self.i) {
                None => return Err(self.err("the string does not end")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(&e) = self.b.get(self.i) else {
                        return Err(self.err("the string does not end"));
                    };
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let first = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&first) {
                                if !self.eat(b"\\u") {
                                    return Err(self.err("a lone surrogate"));
                                }
                                let second = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&second) {
                                    return Err(self.err("a lone surrogate"));
                                }
                                0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
                            } else {
                                first
                            };
                            match char::from_u32(code) {
                                Some(c) => out.push(c),
                                None => return Err(self.err("a lone surrogate")),
                            }
                        }
                        _ => return Err(self.err("an unknown escape")),
                    }
                }
                Some(_) => return Err(self.err("a control character in a string")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        escape_into(&mut out, s);
        out
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(escaped("plain"), r#""plain""#);
        assert_eq!(escaped("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(escaped("l1\nl2\r\t"), r#""l1\nl2\r\t""#);
        assert_eq!(
            escaped("\u{0}\u{1f}\u{7f}\u{85}"),
            r#""\u0000\u001f\u007f\u0085""#
        );
        assert_eq!(escaped("é ✓ 𝄞 /"), "\"é ✓ 𝄞 /\"");
        for s in ["", "a\"\\\n\u{1}b", "ü\u{2028}", "x\u{0}y"] {
            assert_eq!(parse(&escaped(s)), Ok(Value::String(s.to_owned())), "{s:?}");
        }
    }

    #[test]
    fn the_writer_places_commas() {
        let mut w = Writer::new();
        w.open_object();
        w.key("a").number(1);
        w.key("b").open_array();
        w.string("x")
            .boolean(true)
            .null()
            .opt_number(None)
            .opt_string(Some("y"));
        w.open_object().close_object();
        w.close_array();
        w.key("c")
            .open_object()
            .key("d")
            .number(u64::MAX)
            .close_object();
        w.close_object();
        let text = w.finish();
        assert_eq!(
            text,
            "{\"a\":1,\"b\":[\"x\",true,null,null,\"y\",{}],\"c\":{\"d\":18446744073709551615}}\n"
        );
        let v = parse(&text).unwrap();
        assert_eq!(v.get("c").and_then(|c| c.u64_at("d")), Some(u64::MAX));
        assert_eq!(v.get("b").map(|b| b.as_array().len()), Some(6));
    }

    #[test]
    fn the_reader_takes_json() {
        let v = parse(
            r#" {"n": -1.5e+3, "s": "\u00e9\ud834\udd1e\/", "t": [true, false, null], "z": 0} "#,
        )
        .unwrap();
        assert_eq!(v.get("n"), Some(&Value::Number("-1.5e+3".into())));
        assert_eq!(v.str_at("s"), Some("é𝄞/"));
        assert_eq!(v.u64_at("z"), Some(0));
        assert_eq!(v.get("n").and_then(Value::as_u64), None);
        assert_eq!(
            v.get("t").map(|t| t.as_array()[0].as_bool()),
            Some(Some(true))
        );
    }

    #[test]
    fn the_reader_refuses_what_is_not_json() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "01",
            "1.",
            "1e",
            "-",
            "\"abc",
            "\"a\u{1}b\"",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\u12\"",
            "tru",
            "nul",
            "{} {}",
            "[1] x",
            "{1:2}",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert_eq!(parse(&deep).map_err(|e| e.what), Err("nested too deep"));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
    }
}
