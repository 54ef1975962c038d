//! A tiny protobuf wire-format reader: varints and length-delimited fields, enough to walk ONNX and TensorFlow
//! messages by field number without their schemas compiled in.

/// One field of a message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
}

/// Iterates over the fields of one message; stops (with `error` set) at the first malformed byte.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    data: &'a [u8],
    pos: usize,
    pub error: Option<String>,
}

pub(crate) fn fields(data: &[u8]) -> Fields<'_> {
    Fields {
        data,
        pos: 0,
        error: None,
    }
}

fn varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Field<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() || self.error.is_some() {
            return None;
        }
        let at = self.pos;
        let result = (|| {
            let key = varint(self.data, &mut self.pos).ok_or("truncated field key")?;
            let number = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
            if number == 0 {
                return Err("field number 0");
            }
            let field = match key & 7 {
                0 => Field::Varint(varint(self.data, &mut self.pos).ok_or("truncated varint")?),
                1 => {
                    self.pos = self
                        .pos
                        .checked_add(8)
                        .filter(|&p| p <= self.data.len())
                        .ok_or("truncated fixed64")?;
                    Field::Fixed64
                }
                2 => {
                    let n = varint(self.data, &mut self.pos).ok_or("truncated length")?;
                    let n = usize::try_from(n).map_err(|_| "length out of range")?;
                    let end = self
                        .pos
                        .checked_add(n)
                        .filter(|&e| e <= self.data.len())
                        .ok_or("length runs past the end")?;
                    let bytes = self
                        .data
                        .get(self.pos..end)
                        .ok_or("length runs past the end")?;
                    self.pos = end;
                    Field::Bytes(bytes)
                }
                5 => {
                    self.pos = self
                        .pos
                        .checked_add(4)
                        .filter(|&p| p <= self.data.len())
                        .ok_or("truncated fixed32")?;
                    Field::Fixed32
                }
                _ => return Err("unsupported wire type"),
            };
            Ok((number, field))
        })();
        match result {
            Ok(f) => Some(f),
            Err(e) => {
                self.error = Some(format!("{e} at byte {at}"));
                None
            }
        }
    }
}

/// Whether `data` parses as a protobuf message to its last byte.
pub(crate) fn is_message(data: &[u8]) -> bool {
    let mut f = fields(data);
    f.by_ref().count();
    f.error.is_none()
}

/// Whether a prefix of `total` bytes already shows the content is not a message (a malformed field well before the
/// prefix ends), so that tensor bytes that happen to start like a field key are not read in full.
pub(crate) fn clearly_not_message(prefix: &[u8], total: u64) -> bool {
    let mut f = fields(prefix);
    f.by_ref().count();
    match f.error {
        None => false,
        Some(e)
            if (prefix.len() as u64) < total
                && (e.starts_with("length runs past") || e.starts_with("truncated")) =>
        {
            false
        }
        Some(_) => true,
    }
}

/// The length-delimited values of field `n`.
pub(crate) fn bytes_of(data: &[u8], n: u32) -> impl Iterator<Item = &[u8]> {
    fields(data).filter_map(move |(k, v)| match v {
        Field::Bytes(b) if k == n => Some(b),
        _ => None,
    })
}

/// The first length-delimited value of field `n`, as text.
pub(crate) fn string_of(data: &[u8], n: u32) -> Option<String> {
    bytes_of(data, n)
        .next()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The first varint value of field `n`.
pub(crate) fn varint_of(data: &[u8], n: u32) -> Option<u64> {
    fields(data).find_map(|(k, v)| match v {
        Field::Varint(x) if k == n => Some(x),
        _ => None,
    })
}
