//! The pickle machine, executed symbolically: every opcode of protocols 0–5 moves values on a stack and a memo as
//! CPython's unpickler would, but imports are recorded instead of performed and calls build inert values.

use std::collections::HashMap;
use std::rc::Rc;

use super::joblib;
use super::value::{Import, Seq, Val, V};

/// How one import was used by the stream.
#[derive(Debug, Clone)]
pub(crate) struct ImportUse {
    pub import: Import,
    /// Offset of the opcode that made the import.
    pub offset: usize,
    /// Called through REDUCE, INST, OBJ or NEWOBJ.
    pub called: bool,
}

/// Something the stream did that no ordinary pickle does.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// STACK_GLOBAL on values that are not strings: the import cannot be known before loading.
    UnresolvedImport { offset: usize, why: String },
    /// EXT1/2/4 import through the copyreg extension registry.
    ExtensionImport { offset: usize, code: u32 },
    /// BUILD applied to an imported object itself: it rewrites a module's or class's attributes.
    BuildOnGlobal { offset: usize, target: String },
    /// A loader called on bytes: the payload, to scan as a nested file.
    Nested {
        offset: usize,
        loader: String,
        payload: Rc<[u8]>,
    },
    /// A joblib array whose inline data could not be skipped.
    Joblib { offset: usize, why: String },
}

/// What one pickle did, from its first opcode to STOP or to the error that ended it.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub imports: Vec<ImportUse>,
    pub events: Vec<Event>,
    /// The offset just past STOP, when the stream reached it.
    pub end: Option<usize>,
    /// Where and why the stream stopped parsing before STOP.
    pub error: Option<(usize, String)>,
    /// Highest protocol announced by PROTO.
    pub protocol: u8,
    pub opcodes: usize,
}

/// Nested machines (joblib object arrays) stop here.
const MAX_NESTING: usize = 8;

pub(crate) struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<V>,
    marks: Vec<usize>,
    memo: HashMap<u64, V>,
    trace: Trace,
    depth: usize,
}

type Step = Result<bool, String>;

impl<'a> Machine<'a> {
    /// Runs one pickle starting at `start`.
    pub(crate) fn run(data: &'a [u8], start: usize) -> Trace {
        Self::run_nested(data, start, 0)
    }

    fn run_nested(data: &'a [u8], start: usize, depth: usize) -> Trace {
        let mut m = Machine {
            data,
            pos: start,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            trace: Trace::default(),
            depth,
        };
        loop {
            let at = m.pos;
            match m.step() {
                Ok(true) => {
                    m.trace.end = Some(m.pos);
                    break;
                }
                Ok(false) => m.trace.opcodes += 1,
                Err(why) => {
                    m.trace.error = Some((at, why));
                    break;
                }
            }
        }
        m.trace
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "truncated: {n} bytes declared, {} left",
                    self.data.len().saturating_sub(self.pos)
                )
            })?;
        let s = self.data.get(self.pos..end).ok_or("truncated")?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    fn le(&mut self, n: usize) -> Result<u64, String> {
        let bytes = self.take(n)?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn len_of(&mut self, n: usize) -> Result<usize, String> {
        usize::try_from(self.le(n)?)
            .map_err(|_| "declared length does not fit in memory".to_string())
    }

    /// A protocol-0 argument: bytes up to the next newline.
    fn line(&mut self) -> Result<&'a [u8], String> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated: line without newline")?;
        let line = rest.get(..n).unwrap_or_default();
        self.pos += n + 1;
        Ok(line)
    }

    fn line_str(&mut self) -> Result<String, String> {
        Ok(String::from_utf8_lossy(self.line()?).into_owned())
    }

    fn push(&mut self, v: Val) {
        self.stack.push(Rc::new(v));
    }

    fn pop(&mut self) -> Result<V, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("stack underflow".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn top(&mut self) -> Result<&mut V, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("stack underflow".into());
        }
        self.stack
            .last_mut()
            .ok_or_else(|| "stack underflow".into())
    }

    fn pop_mark(&mut self) -> Result<Vec<V>, String> {
        let mark = self.marks.pop().ok_or("MARK missing")?;
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn memo_get(&mut self, key: u64) -> Result<(), String> {
        let v = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("memo key {key} read before it was written"))?;
        self.stack.push(v);
        Ok(())
    }

    fn memo_put(&mut self, key: u64) -> Result<(), String> {
        let v = self
            .stack
            .last()
            .cloned()
            .ok_or("memo write from an empty stack")?;
        self.memo.insert(key, v);
        Ok(())
    }

    fn import(&mut self, module: String, name: String, at: usize) -> Val {
        let import = Import { module, name };
        self.trace.imports.push(ImportUse {
            import: import.clone(),
            offset: at,
            called: false,
        });
        Val::Global(Rc::new(import))
    }

    /// Records that `callee` is called with `args` and returns the inert result.
    fn call(&mut self, callee: V, args: V, at: usize) -> Val {
        if let Some(g) = callee.as_global() {
            for u in self.trace.imports.iter_mut().rev() {
                if u.import == *g {
                    u.called = true;
                    break;
                }
            }
            if let Some(result) = self.call_result(g, &args, at) {
                return result;
            }
        }
        Val::object(callee, args)
    }

    /// The few calls whose result matters to the scan: bytes built for a loader, and the loaders themselves.
    fn call_result(&mut self, g: &Import, args: &V, at: usize) -> Option<Val> {
        let first = args.items().first().cloned();
        let module = if g.module == "__builtin__" {
            "builtins"
        } else {
            g.module.as_str()
        };
        match (module, g.name.as_str()) {
            ("_codecs", "encode") => {
                let s = first?.as_str()?.to_owned();
                let bytes: Option<Vec<u8>> =
                    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                Some(bytes.map_or(Val::Unknown, |b| Val::Bytes(b.into())))
            }
            ("builtins", "bytes" | "bytearray") => match first.as_deref() {
                Some(Val::Bytes(b)) => Some(Val::Bytes(b.clone())),
                _ => None,
            },
            _ if super::policy::is_loader(&g.module, &g.name) => {
                if let Some(Val::Bytes(payload)) = first.as_deref() {
                    self.trace.events.push(Event::Nested {
                        offset: at,
                        loader: format!("{}.{}", g.module, g.name),
                        payload: payload.clone(),
                    });
                }
                None
            }
            _ => None,
        }
    }

    fn stack_global(&mut self, at: usize) -> Result<Val, String> {
        let name = self.pop()?;
        let module = self.pop()?;
        match (module.as_str(), name.as_str()) {
            (Some(m), Some(n)) => Ok(self.import(m.to_owned(), n.to_owned(), at)),
            _ => {
                let why = format!("module {} and name {}", describe(&module), describe(&name));
                self.trace
                    .events
                    .push(Event::UnresolvedImport { offset: at, why });
                Ok(Val::Unknown)
            }
        }
    }

    fn build(&mut self, at: usize) -> Result<(), String> {
        let state = self.pop()?;
        let target = self.top()?.clone();
        if let Some(g) = target.as_global() {
            let target = format!("{}.{}", g.module, g.name);
            self.trace
                .events
                .push(Event::BuildOnGlobal { offset: at, target });
        }
        if let Val::Object { callee, args, .. } = &*target {
            if let Some(array) = joblib::wrapper_array(callee, args, &state) {
                return self.skip_joblib_array(array, at);
            }
        }
        Ok(())
    }

    /// joblib writes each array's bytes straight into the stream after the wrapper's BUILD: skip them exactly.
    fn skip_joblib_array(
        &mut self,
        array: Result<joblib::Array, String>,
        at: usize,
    ) -> Result<(), String> {
        let array = match array {
            Ok(a) => a,
            Err(why) => {
                self.trace.events.push(Event::Joblib {
                    offset: at,
                    why: why.clone(),
                });
                return Err(format!("joblib array: {why}"));
            }
        };
        match array {
            joblib::Array::Objects => {
                if self.depth >= MAX_NESTING {
                    return Err("joblib object arrays nested too deep".into());
                }
                let inner = Machine::run_nested(self.data, self.pos, self.depth + 1);
                self.trace.imports.extend(inner.imports);
                self.trace.events.extend(inner.events);
                match (inner.end, inner.error) {
                    (Some(end), _) => self.pos = end,
                    (None, Some((off, why))) => {
                        return Err(format!("joblib object array at {off}: {why}"))
                    }
                    (None, None) => return Err("joblib object array did not end".into()),
                }
            }
            joblib::Array::Raw { bytes, aligned } => {
                if aligned {
                    let pad = self.byte()?;
                    self.take(usize::from(pad))?;
                }
                let n = usize::try_from(bytes).map_err(|_| "joblib array larger than memory")?;
                self.take(n).map_err(|e| format!("joblib array data {e}"))?;
            }
        }
        Ok(())
    }

    /// Executes one opcode; `Ok(true)` at STOP.
    fn step(&mut self) -> Step {
        let at = self.pos;
        let op = self
            .byte()
            .map_err(|_| "stream ends before STOP".to_string())?;
        match op {
            b'.' => return Ok(true),
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                let floor = self.marks.last().copied().unwrap_or(0);
                if self.stack.len() > floor {
                    self.stack.pop();
                } else {
                    self.pop_mark()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                self.stack.push(v);
            }
            b'F' => {
                self.line()?;
                self.push(Val::Float);
            }
            b'G' => {
                self.take(8)?;
                self.push(Val::Float);
            }
            b'I' => {
                let line = self.line()?;
                let v = match line {
                    b"00" => Val::Bool,
                    b"01" => Val::Bool,
                    _ => parse_int(line)?,
                };
                self.push(v);
            }
            b'L' => {
                let line = self.line()?;
                let line = line.strip_suffix(b"L").unwrap_or(line);
                let v = parse_int(line)?;
                self.push(v);
            }
            b'J' => {
                let v = self.le(4)? as u32 as i32;
                self.push(Val::Int(i64::from(v)));
            }
            b'K' => {
                let v = self.byte()?;
                self.push(Val::Int(i64::from(v)));
            }
            b'M' => {
                let v = self.le(2)?;
                self.push(Val::Int(v as i64));
            }
            0x8a => {
                let n = usize::from(self.byte()?);
                let bytes = self.take(n)?;
                self.push(long_le(bytes));
            }
            0x8b => {
                let n = self.len_of(4)?;
                let bytes = self.take(n)?;
                self.push(long_le(bytes));
            }
            b'N' => self.push(Val::None),
            0x88 => self.push(Val::Bool),
            0x89 => self.push(Val::Bool),
            b'P' => {
                self.line()?;
                self.push(Val::Persistent);
            }
            b'Q' => {
                self.pop()?;
                self.push(Val::Persistent);
            }
            b'S' => {
                let line = self.line()?;
                let s = unquote(line).ok_or("STRING argument is not a quoted string")?;
                self.push(Val::Str(String::from_utf8_lossy(&s).into()));
            }
            b'T' => {
                let n = self.len_of(4)?;
                let s = self.take(n)?;
                self.push(Val::Str(String::from_utf8_lossy(s).into()));
            }
            b'U' => {
                let n = usize::from(self.byte()?);
                let s = self.take(n)?;
                self.push(Val::Str(String::from_utf8_lossy(s).into()));
            }
            b'V' => {
                let line = self.line()?;
                self.push(Val::Str(raw_unicode_escape(line).into()));
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => self.len_of(4)?,
                    0x8c => usize::from(self.byte()?),
                    _ => self.len_of(8)?,
                };
                let s = self.take(n)?;
                let s = std::str::from_utf8(s).map_err(|_| "unicode string is not UTF-8")?;
                self.push(Val::Str(s.into()));
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => self.len_of(4)?,
                    b'C' => usize::from(self.byte()?),
                    _ => self.len_of(8)?,
                };
                let s = self.take(n)?;
                self.push(Val::Bytes(s.into()));
            }
            0x97 => {
                return Err(
                    "NEXT_BUFFER needs out-of-band buffers, which a file cannot carry".into(),
                )
            }
            0x98 => {
                self.top()?;
            }
            b'R' => {
                let args = self.pop()?;
                let callee = self.pop()?;
                let v = self.call(callee, args, at);
                self.push(v);
            }
            b'b' => self.build(at)?,
            b'c' => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                let v = self.import(module, name, at);
                self.push(v);
            }
            b'i' => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                let args = self.pop_mark()?;
                let callee = Rc::new(self.import(module, name, at));
                let v = self.call(callee, Rc::new(Val::Tuple(Seq::from_items(args))), at);
                self.push(v);
            }
            b'o' => {
                let mut items = self.pop_mark()?.into_iter();
                let callee = items.next().ok_or("OBJ without a class")?;
                let v = self.call(callee, Rc::new(Val::Tuple(Seq::from_items(items))), at);
                self.push(v);
            }
            0x81 => {
                let args = self.pop()?;
                let cls = self.pop()?;
                let v = self.call(cls, args, at);
                self.push(v);
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                let v = self.call(cls, args, at);
                self.push(v);
            }
            0x93 => {
                let v = self.stack_global(at)?;
                self.push(v);
            }
            0x82..=0x84 => {
                let code = match op {
                    0x82 => u32::from(self.byte()?),
                    0x83 => self.le(2)? as u32,
                    _ => self.le(4)? as u32,
                };
                self.trace
                    .events
                    .push(Event::ExtensionImport { offset: at, code });
                self.push(Val::Unknown);
            }
            b'd' => {
                let items = self.pop_mark()?;
                self.push(Val::Dict(Seq::from_items(items)));
            }
            b'}' => self.push(Val::Dict(Seq::default())),
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                extend(self.top()?, [k, v]);
            }
            b'u' => {
                let items = self.pop_mark()?;
                extend(self.top()?, items);
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Val::List(Seq::from_items(items)));
            }
            b']' => self.push(Val::List(Seq::default())),
            b'a' => {
                let v = self.pop()?;
                extend(self.top()?, [v]);
            }
            b'e' => {
                let items = self.pop_mark()?;
                extend(self.top()?, items);
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push(Val::Tuple(Seq::from_items(items)));
            }
            b')' => self.push(Val::Tuple(Seq::default())),
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let floor = self.marks.last().copied().unwrap_or(0);
                if self.stack.len() < floor + n {
                    return Err("stack underflow".into());
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Val::Tuple(Seq::from_items(items)));
            }
            0x8f => self.push(Val::Set(Seq::default())),
            0x90 => {
                let items = self.pop_mark()?;
                extend(self.top()?, items);
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.push(Val::Set(Seq::from_items(items)));
            }
            b'g' => {
                let key = parse_index(self.line()?)?;
                self.memo_get(key)?;
            }
            b'h' => {
                let key = u64::from(self.byte()?);
                self.memo_get(key)?;
            }
            b'j' => {
                let key = self.le(4)?;
                self.memo_get(key)?;
            }
            b'p' => {
                let key = parse_index(self.line()?)?;
                self.memo_put(key)?;
            }
            b'q' => {
                let key = u64::from(self.byte()?);
                self.memo_put(key)?;
            }
            b'r' => {
                let key = self.le(4)?;
                self.memo_put(key)?;
            }
            0x94 => {
                let key = self.memo.len() as u64;
                self.memo_put(key)?;
            }
            0x80 => {
                let proto = self.byte()?;
                if proto > 5 {
                    return Err(format!("unsupported pickle protocol {proto}"));
                }
                self.trace.protocol = self.trace.protocol.max(proto);
            }
            0x95 => {
                // Frames only group opcodes; reading through them is what the unpickler does.
                let n = self.le(8)?;
                if n > (self.data.len().saturating_sub(self.pos)) as u64 {
                    return Err(format!("FRAME of {n} bytes runs past the end of the data"));
                }
            }
            other => return Err(format!("invalid opcode 0x{other:02x}")),
        }
        Ok(false)
    }
}

/// Appends to the container on top of the stack (APPEND, SETITEM(S), ADDITEMS). Appending to anything else calls
/// its methods at load time: the value becomes unknown.
fn extend(top: &mut V, items: impl IntoIterator<Item = V>) {
    match Rc::make_mut(top) {
        Val::List(s) | Val::Dict(s) | Val::Set(s) => {
            for item in items {
                s.push(item);
            }
        }
        _ => {}
    }
}

fn describe(v: &Val) -> String {
    match v {
        Val::Str(s) => format!("`{}`", s.chars().take(80).collect::<String>()),
        Val::Bytes(_) => "bytes (STACK_GLOBAL needs str)".into(),
        Val::Object { callee, .. } => match callee.as_global() {
            Some(g) => format!("computed by `{}.{}`", g.module, g.name),
            None => "computed at load time".into(),
        },
        Val::Unknown => "unknown".into(),
        _ => "not a string".into(),
    }
}

fn parse_int(line: &[u8]) -> Result<Val, String> {
    let s = std::str::from_utf8(line)
        .map_err(|_| "integer is not ASCII")?
        .trim();
    if let Ok(v) = s.parse::<i64>() {
        return Ok(Val::Int(v));
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(Val::BigInt)
    } else {
        Err(format!(
            "invalid integer `{}`",
            s.chars().take(40).collect::<String>()
        ))
    }
}

fn parse_index(line: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| "invalid memo index".to_string())
}

fn long_le(bytes: &[u8]) -> Val {
    if bytes.len() > 8 {
        return Val::BigInt;
    }
    let mut v: i64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        v |= i64::from(b) << (8 * i);
    }
    if let Some(&last) = bytes.last() {
        if last & 0x80 != 0 && bytes.len() < 8 {
            v -= 1i64 << (8 * bytes.len());
        }
    }
    Val::Int(v)
}

/// Decodes a protocol-0 STRING argument: a Python bytes literal in single or double quotes.
fn unquote(line: &[u8]) -> Option<Vec<u8>> {
    let q = *line.first()?;
    if !(q == b'\'' || q == b'"') || line.len() < 2 || line.last() != Some(&q) {
        return None;
    }
    let body = line.get(1..line.len() - 1)?;
    let mut out = Vec::with_capacity(body.len());
    let mut it = body.iter().copied().peekable();
    while let Some(b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next()? {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'x' => {
                let h = [it.next()?, it.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&h).ok()?, 16).ok()?);
            }
            d @ b'0'..=b'7' => {
                let mut v = u32::from(d - b'0');
                for _ in 0..2 {
                    match it.peek() {
                        Some(&n @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(n - b'0');
                            it.next();
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'\n' => {}
            other => {
                if !matches!(other, b'\\' | b'\'' | b'"') {
                    out.push(b'\\');
                }
                out.push(other);
            }
        }
    }
    Some(out)
}

/// Decodes a protocol-0 UNICODE argument (`raw-unicode-escape`).
fn raw_unicode_escape(line: &[u8]) -> String {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        if b == b'\\' {
            let width = match line.get(i + 1) {
                Some(b'u') => 4,
                Some(b'U') => 8,
                _ => 0,
            };
            if width > 0 {
                let hex = line
                    .get(i + 2..i + 2 + width)
                    .and_then(|h| std::str::from_utf8(h).ok());
                if let Some(c) = hex
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
                {
                    out.push(c);
                    i += 2 + width;
                    continue;
                }
            }
        }
        out.push(char::from(b));
        i += 1;
    }
    out
}
