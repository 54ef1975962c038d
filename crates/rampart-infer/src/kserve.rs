//! The KServe v2 Open Inference Protocol's JSON: request and response bodies, parsed with bounds.
//!
//! Requests come from untrusted clients: the nesting depth is checked on the raw bytes before any parsing, a shape's
//! element count is checked (with overflow checks) before anything is allocated for it, and a tensor whose `data`
//! disagrees with its `shape` is refused. `data` is read element by element straight into the tensor, flat or nested
//! exactly as the shape is (the protocol allows either), so a request takes memory in proportion to its shape, not
//! to the nesting a client sends; `parameters` are skipped, not built (only `binary_data_size` is read). Input names
//! are unique, and a client's strings are cut short in error messages ([`crate::clip`]). Triton's binary tensor
//! extension (`Inference-Header-Content-Length`, `binary_data_size`) is understood on input, so `tritonclient` works
//! with its defaults.

use serde::Deserialize;
use serde_json::Value;

use crate::{clip, DataType, Tensor, TensorData};

/// Bounds applied while parsing a request.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The deepest nesting of arrays and objects accepted.
    pub max_depth: usize,
    /// The most elements one tensor may have.
    pub max_elements: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_depth: 16,
            max_elements: 1 << 20,
        }
    }
}

/// Why a request or response body was refused. Messages are safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The body is not JSON, or not the protocol's shape.
    #[error("malformed JSON body: {0}")]
    Malformed(String),
    /// The JSON nests deeper than allowed.
    #[error("JSON nested deeper than {0} levels")]
    TooDeep(usize),
    /// A tensor has more elements than allowed.
    #[error("tensor `{name}` has more than {max} elements")]
    TooLarge {
        /// The tensor.
        name: String,
        /// The bound.
        max: usize,
    },
    /// A tensor's data does not fit its shape or type.
    #[error("tensor `{name}`: {reason}")]
    Tensor {
        /// The tensor.
        name: String,
        /// What disagrees.
        reason: String,
    },
}

/// A parsed inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    /// The client's request id, echoed in the response.
    pub id: Option<String>,
    /// The input tensors.
    pub inputs: Vec<Tensor>,
    /// The outputs asked for by name (empty: all).
    pub outputs: Vec<String>,
}

// The names serde puts in its messages are the protocol's, not these types'.
#[derive(Deserialize)]
#[serde(expecting = "an inference request object")]
struct RawRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, borrow)]
    #[allow(
        dead_code,
        reason = "accepted for compatibility; no request parameter changes inference"
    )]
    parameters: Option<Parameters<'a>>,
    #[serde(borrow)]
    inputs: Vec<RawTensor<'a>>,
    #[serde(default)]
    outputs: Vec<RawOutput>,
}

#[derive(Deserialize)]
#[serde(expecting = "a tensor object")]
struct RawTensor<'a> {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    #[serde(default, borrow)]
    parameters: Option<Parameters<'a>>,
    /// Kept as text until the datatype and shape are known: the elements are then read straight into the tensor.
    #[serde(default, borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

/// A `parameters` object: the one entry read, the others skipped without being built.
#[derive(Deserialize)]
#[serde(expecting = "a `parameters` object")]
struct Parameters<'a> {
    #[serde(default, borrow)]
    binary_data_size: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
#[serde(expecting = "an output object with a `name`")]
struct RawOutput {
    name: String,
}

/// Checks the nesting depth of JSON text without parsing it (strings and escapes are skipped).
pub fn check_depth(body: &[u8], max_depth: usize) -> Result<(), CodecError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(CodecError::TooDeep(max_depth));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses a request body. `json_len` is the `Inference-Header-Content-Length` header: the JSON part's length when the
/// body also carries binary tensors.
pub fn parse_request(
    body: &[u8],
    json_len: Option<usize>,
    bounds: Bounds,
) -> Result<InferRequest, CodecError> {
    let (json, mut binary) = match json_len {
        Some(n) => body.split_at_checked(n).ok_or_else(|| {
            CodecError::Malformed("the binary header length exceeds the body".into())
        })?,
        None => (body, &[][..]),
    };
    check_depth(json, bounds.max_depth)?;
    let raw: RawRequest =
        serde_json::from_slice(json).map_err(|err| CodecError::Malformed(short(&err)))?;
    if raw.inputs.is_empty() {
        return Err(CodecError::Malformed("`inputs` is empty".into()));
    }
    // One tensor per name: a second one would reach whatever reads the last (an upstream server) unchecked.
    let mut names: Vec<&str> = raw.inputs.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair.first() == pair.get(1)) {
        return Err(CodecError::Malformed(format!(
            "input `{}` is given more than once",
            clip(pair.first().copied().unwrap_or_default())
        )));
    }
    let mut inputs = Vec::with_capacity(raw.inputs.len());
    for tensor in raw.inputs {
        inputs.push(decode_tensor(tensor, &mut binary, bounds)?);
    }
    if !binary.is_empty() {
        return Err(CodecError::Malformed(
            "binary data left over after the last tensor".into(),
        ));
    }
    Ok(InferRequest {
        id: raw.id,
        inputs,
        outputs: raw.outputs.into_iter().map(|o| o.name).collect(),
    })
}

fn short(err: &serde_json::Error) -> String {
    let text = err.to_string();
    text.chars().take(160).collect()
}

fn element_count(name: &str, shape: &[u64], max: usize) -> Result<usize, CodecError> {
    let too_large = || CodecError::TooLarge {
        name: clip(name),
        max,
    };
    let mut count = 1usize;
    for &dim in shape {
        let dim = usize::try_from(dim).map_err(|_| too_large())?;
        count = count.checked_mul(dim).ok_or_else(too_large)?;
    }
    if count > max {
        return Err(too_large());
    }
    Ok(count)
}

fn decode_tensor(
    raw: RawTensor<'_>,
    binary: &mut &[u8],
    bounds: Bounds,
) -> Result<Tensor, CodecError> {
    let name = raw.name;
    let bad = |reason: String| CodecError::Tensor {
        name: clip(&name),
        reason,
    };
    let datatype = DataType::parse(&raw.datatype)
        .ok_or_else(|| bad(format!("unknown datatype `{}`", clip(&raw.datatype))))?;
    if raw.shape.len() > 8 {
        return Err(bad("more than 8 dimensions".into()));
    }
    let count = element_count(&name, &raw.shape, bounds.max_elements)?;
    let binary_size = raw
        .parameters
        .as_ref()
        .and_then(|p| p.binary_data_size)
        .map(|v| {
            serde_json::from_str::<u64>(v.get())
                .ok()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad("`binary_data_size` must be a size".into()))
        })
        .transpose()?;
    let data = match (binary_size, raw.data) {
        (Some(_), Some(_)) => return Err(bad("has both `data` and `binary_data_size`".into())),
        (None, None) => return Err(bad("has no `data`".into())),
        (Some(size), None) => {
            let (bytes, rest) = binary
                .split_at_checked(size)
                .ok_or_else(|| bad("`binary_data_size` exceeds the body".into()))?;
            *binary = rest;
            decode_binary(datatype, bytes, count).map_err(bad)?
        }
        (None, Some(text)) => match fast_fp32(datatype, text.get()) {
            Some(data) => data,
            None => read_data(datatype, &raw.shape, count, text.get()).map_err(bad)?,
        },
    };
    if data.len() != count {
        return Err(bad(format!(
            "shape {:?} needs {count} elements, the data has {}",
            raw.shape,
            data.len()
        )));
    }
    let shape = raw.shape.iter().map(|&d| d as usize).collect();
    Tensor::new(name.clone(), shape, data).map_err(|err| bad(err.to_string()))
}

/// The common case, flat FP32 data, parsed without building a JSON tree; `None` sends anything else (nested arrays,
/// a bad element, a value out of FP32's range) to the general path, which also words the error.
fn fast_fp32(datatype: DataType, text: &str) -> Option<TensorData> {
    if datatype != DataType::Fp32 || !text.starts_with('[') {
        return None;
    }
    let values: Vec<f32> = serde_json::from_str(text).ok()?;
    values
        .iter()
        .all(|v| v.is_finite())
        .then_some(TensorData::Fp32(values))
}

/// Reads a tensor's `data` element by element into a tensor of `datatype`: either flat (`count` elements in row-major
/// order) or nested exactly as `shape` is, each element checked against the datatype as it is read. Nothing is built
/// but the tensor, and no more than `count` elements are taken.
fn read_data(
    datatype: DataType,
    shape: &[u64],
    count: usize,
    text: &str,
) -> Result<TensorData, String> {
    let shape: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
        .collect();
    let capacity = count.min(1 << 16);
    let mut out = match datatype {
        DataType::Bool => TensorData::Bool(Vec::with_capacity(capacity)),
        DataType::Uint8 => TensorData::Uint8(Vec::with_capacity(capacity)),
        DataType::Int32 => TensorData::Int32(Vec::with_capacity(capacity)),
        DataType::Int64 => TensorData::Int64(Vec::with_capacity(capacity)),
        DataType::Fp32 => TensorData::Fp32(Vec::with_capacity(capacity)),
        DataType::Fp64 => TensorData::Fp64(Vec::with_capacity(capacity)),
        DataType::Bytes => TensorData::Bytes(Vec::with_capacity(capacity)),
    };
    let mut reader = Data {
        shape: &shape,
        count,
        out: &mut out,
        nested: None,
        what: datatype_noun(datatype),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    serde::de::DeserializeSeed::deserialize(Level(&mut reader, 0), &mut de)
        .and_then(|()| de.end())
        .map_err(|e| short(&e))?;
    Ok(out)
}

fn datatype_noun(datatype: DataType) -> &'static str {
    match datatype {
        DataType::Bool => "a boolean",
        DataType::Uint8 => "a UINT8",
        DataType::Int32 => "an INT32",
        DataType::Int64 => "an INT64",
        DataType::Fp32 => "an FP32 number",
        DataType::Fp64 => "a number",
        DataType::Bytes => "a string",
    }
}

/// What [`read_data`] has read so far.
struct Data<'a> {
    shape: &'a [usize],
    count: usize,
    out: &'a mut TensorData,
    /// Whether the data is nested as the shape is (decided by the first element of the outer array).
    nested: Option<bool>,
    what: &'static str,
}

impl Data<'_> {
    fn push<E: serde::de::Error>(&mut self, value: Scalar<'_>) -> Result<(), E> {
        if self.out.len() >= self.count {
            return Err(E::custom(format!(
                "the data has more elements than the shape's {}",
                self.count
            )));
        }
        fn put<T>(values: &mut Vec<T>, value: Option<T>) -> bool {
            value.map(|v| values.push(v)).is_some()
        }
        let pushed = match (&mut *self.out, value) {
            (TensorData::Bool(v), Scalar::Bool(b)) => put(v, Some(b)),
            (TensorData::Uint8(v), Scalar::U64(n)) => put(v, u8::try_from(n).ok()),
            (TensorData::Int32(v), Scalar::U64(n)) => put(v, i32::try_from(n).ok()),
            (TensorData::Int32(v), Scalar::I64(n)) => put(v, i32::try_from(n).ok()),
            (TensorData::Int64(v), Scalar::U64(n)) => put(v, i64::try_from(n).ok()),
            (TensorData::Int64(v), Scalar::I64(n)) => put(v, Some(n)),
            (TensorData::Fp32(v), Scalar::U64(n)) => put(v, Some(n as f32)),
            (TensorData::Fp32(v), Scalar::I64(n)) => put(v, Some(n as f32)),
            (TensorData::Fp32(v), Scalar::F64(x)) => {
                put(v, Some(x as f32).filter(|x| x.is_finite()))
            }
            (TensorData::Fp64(v), Scalar::U64(n)) => put(v, Some(n as f64)),
            (TensorData::Fp64(v), Scalar::I64(n)) => put(v, Some(n as f64)),
            (TensorData::Fp64(v), Scalar::F64(x)) => put(v, Some(x)),
            (TensorData::Bytes(v), Scalar::Str(s)) => put(v, Some(s.as_bytes().to_vec())),
            _ => false,
        };
        if pushed {
            return Ok(());
        }
        Err(E::custom(format!("an element is not {}", self.what)))
    }
}

/// One element as JSON gives it.
enum Scalar<'s> {
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(&'s str),
    Other,
}

/// The value at a depth of nesting (0: `data` itself).
struct Level<'r, 'a>(&'r mut Data<'a>, usize);

impl<'de> serde::de::DeserializeSeed<'de> for Level<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Level<'_, '_> {
    /// A scalar where one may stand: the elements of a flat array, the innermost level of a nested one, or `data`
    /// itself for a tensor of one element.
    fn scalar<E: serde::de::Error>(self, value: Scalar<'_>) -> Result<(), E> {
        let Level(data, depth) = self;
        let rank = data.shape.len();
        let here = match depth {
            0 => data.count == 1,
            1 if data.nested != Some(true) && rank != 1 => {
                data.nested = Some(false);
                true
            }
            d => d == rank && data.nested != Some(false),
        };
        if !here {
            return Err(E::custom("the data's nesting does not match the shape"));
        }
        data.push(value)
    }
}

impl<'de> serde::de::Visitor<'de> for Level<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of elements")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Scalar::U64(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Scalar::I64(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Scalar::F64(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Scalar::Str(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.scalar(Scalar::Other)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        Err(serde::de::Error::custom(format!(
            "an element is not {}",
            self.0.what
        )))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Level(data, depth) = self;
        let rank = data.shape.len();
        // Nested: the array at depth d holds shape[d] values. Flat: `data` holds the elements.
        if depth > 0 {
            if data.nested == Some(false) || depth >= rank || rank < 2 {
                return Err(serde::de::Error::custom(
                    "the data's nesting does not match the shape",
                ));
            }
            data.nested = Some(true);
        }
        let mut len = 0usize;
        while seq.next_element_seed(Level(data, depth + 1))?.is_some() {
            len += 1;
        }
        if data.nested == Some(true) && data.shape.get(depth) != Some(&len) {
            return Err(serde::de::Error::custom(
                "the data's nesting does not match the shape",
            ));
        }
        Ok(())
    }
}

fn decode_binary(datatype: DataType, bytes: &[u8], count: usize) -> Result<TensorData, String> {
    fn fixed<const N: usize, T>(
        bytes: &[u8],
        count: usize,
        f: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, String> {
        if Some(bytes.len()) != count.checked_mul(N) {
            return Err(format!(
                "{} bytes of binary data for {count} elements of {N} bytes",
                bytes.len()
            ));
        }
        Ok(bytes
            .chunks_exact(N)
            .map(|chunk| {
                let mut array = [0u8; N];
                array.copy_from_slice(chunk);
                f(array)
            })
            .collect())
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(fixed::<1, _>(bytes, count, |[b]| b != 0)?),
        DataType::Uint8 => TensorData::Uint8(fixed::<1, _>(bytes, count, |[b]| b)?),
        DataType::Int32 => TensorData::Int32(fixed(bytes, count, i32::from_le_bytes)?),
        DataType::Int64 => TensorData::Int64(fixed(bytes, count, i64::from_le_bytes)?),
        // Finite only, as in JSON (which cannot even spell NaN): a model's answer to NaN is no answer.
        DataType::Fp32 => {
            let values = fixed(bytes, count, f32::from_le_bytes)?;
            if !values.iter().all(|v| v.is_finite()) {
                return Err("a non-finite FP32 value (NaN or infinity)".into());
            }
            TensorData::Fp32(values)
        }
        DataType::Fp64 => {
            let values = fixed(bytes, count, f64::from_le_bytes)?;
            if !values.iter().all(|v| v.is_finite()) {
                return Err("a non-finite FP64 value (NaN or infinity)".into());
            }
            TensorData::Fp64(values)
        }
        DataType::Bytes => {
            let mut rest = bytes;
            let mut items = Vec::with_capacity(count.min(1 << 16));
            while !rest.is_empty() {
                let (len, tail) = rest
                    .split_at_checked(4)
                    .ok_or("a truncated BYTES length prefix")?;
                let mut prefix = [0u8; 4];
                prefix.copy_from_slice(len);
                let n = u32::from_le_bytes(prefix) as usize;
                let (item, tail) = tail
                    .split_at_checked(n)
                    .ok_or("a BYTES element longer than the data")?;
                if items.len() >= count {
                    return Err(format!("more than the shape's {count} elements"));
                }
                items.push(item.to_vec());
                rest = tail;
            }
            TensorData::Bytes(items)
        }
    })
}

/// Encodes tensors as the protocol's JSON list of tensors (`inputs` or `outputs`).
pub fn tensors_json(tensors: &[Tensor]) -> Value {
    Value::Array(
        tensors
            .iter()
            .map(|t| {
                let data = match &t.data {
                    TensorData::Bool(v) => Value::from(v.clone()),
                    TensorData::Uint8(v) => Value::from(v.clone()),
                    TensorData::Int32(v) => Value::from(v.clone()),
                    TensorData::Int64(v) => Value::from(v.clone()),
                    TensorData::Fp32(v) => {
                        Value::Array(v.iter().map(|&x| json_f64(f64::from(x))).collect())
                    }
                    TensorData::Fp64(v) => Value::Array(v.iter().map(|&x| json_f64(x)).collect()),
                    TensorData::Bytes(v) => Value::Array(
                        v.iter()
                            .map(|b| Value::from(String::from_utf8_lossy(b).into_owned()))
                            .collect(),
                    ),
                };
                serde_json::json!({
                    "name": t.name,
                    "datatype": t.datatype().as_str(),
                    "shape": t.shape,
                    "data": data,
                })
            })
            .collect(),
    )
}

/// JSON has no NaN or infinity: they become `null` rather than invalid JSON.
fn json_f64(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// Encodes an inference response, written straight from the tensors (no intermediate JSON tree). Floats are
/// written in their shortest exact form (`0.1` for the FP32 nearest 0.1); NaN and infinity become `null`.
pub fn encode_response(model: &str, id: Option<&str>, outputs: &[Tensor]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Response<'a> {
        model_name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        outputs: Vec<Output<'a>>,
    }
    #[derive(serde::Serialize)]
    struct Output<'a> {
        name: &'a str,
        datatype: &'static str,
        shape: &'a [usize],
        data: Data<'a>,
    }
    struct Data<'a>(&'a TensorData);
    impl serde::Serialize for Data<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            fn floats<S: serde::Serializer, T: Copy + Into<f64> + serde::Serialize>(
                serializer: S,
                values: &[T],
            ) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(values.len()))?;
                for &v in values {
                    if v.into().is_finite() {
                        seq.serialize_element(&v)?;
                    } else {
                        seq.serialize_element(&())?;
                    }
                }
                seq.end()
            }
            match self.0 {
                TensorData::Bool(v) => v.serialize(serializer),
                TensorData::Uint8(v) => v.serialize(serializer),
                TensorData::Int32(v) => v.serialize(serializer),
                TensorData::Int64(v) => v.serialize(serializer),
                TensorData::Fp32(v) => floats(serializer, v),
                TensorData::Fp64(v) => floats(serializer, v),
                TensorData::Bytes(v) => {
                    let mut seq = serializer.serialize_seq(Some(v.len()))?;
                    for b in v {
                        seq.serialize_element(&String::from_utf8_lossy(b))?;
                    }
                    seq.end()
                }
            }
        }
    }
    let response = Response {
        model_name: model,
        id,
        outputs: outputs
            .iter()
            .map(|t| Output {
                name: &t.name,
                datatype: t.datatype().as_str(),
                shape: &t.shape,
                data: Data(&t.data),
            })
            .collect(),
    };
    let mut body =
        Vec::with_capacity(96 + outputs.iter().map(|t| t.data.len() * 12).sum::<usize>());
    // Writing into a Vec cannot fail, and every value here is serialisable.
    let _ = serde_json::to_writer(&mut body, &response);
    body
}

/// Parses the `outputs` of a response body (used by the upstream client).
pub fn parse_response(body: &[u8], bounds: Bounds) -> Result<Vec<Tensor>, CodecError> {
    #[derive(Deserialize)]
    struct RawResponse<'a> {
        #[serde(borrow)]
        outputs: Vec<RawTensor<'a>>,
    }
    check_depth(body, bounds.max_depth)?;
    let raw: RawResponse =
        serde_json::from_slice(body).map_err(|err| CodecError::Malformed(short(&err)))?;
    let mut none: &[u8] = &[];
    raw.outputs
        .into_iter()
        .map(|t| decode_tensor(t, &mut none, bounds))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_request_parses() {
        let body = br#"{"id":"7","inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[0.5,1]}]}"#;
        let req = parse_request(body, None, Bounds::default()).unwrap();
        assert_eq!(req.id.as_deref(), Some("7"));
        assert_eq!(req.inputs[0].data, TensorData::Fp32(vec![0.5, 1.0]));
    }

    #[test]
    fn nested_data_is_flattened_row_major() {
        let body =
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}"#;
        let req = parse_request(body, None, Bounds::default()).unwrap();
        assert_eq!(req.inputs[0].data, TensorData::Int32(vec![1, 2, 3, 4]));
    }

    #[test]
    fn shape_and_data_must_agree() {
        let body = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3]}]}"#;
        let err = parse_request(body, None, Bounds::default()).unwrap_err();
        assert!(matches!(err, CodecError::Tensor { .. }), "{err}");
    }

    #[test]
    fn a_huge_shape_is_refused_before_allocation() {
        let body = br#"{"inputs":[{"name":"x","shape":[4294967296,4294967296,16],"datatype":"FP32","data":[]}]}"#;
        assert!(matches!(
            parse_request(body, None, Bounds::default()),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let body = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            check_depth(body.as_bytes(), 16),
            Err(CodecError::TooDeep(16))
        );
        assert!(check_depth(br#"{"a":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"["}"#, 3).is_ok());
    }

    #[test]
    fn binary_tensors_are_read_after_the_json() {
        let json = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&(-2.0f32).to_le_bytes());
        let req = parse_request(&body, Some(json.len()), Bounds::default()).unwrap();
        assert_eq!(req.inputs[0].data, TensorData::Fp32(vec![1.5, -2.0]));
        assert!(parse_request(&body, Some(body.len() + 1), Bounds::default()).is_err());
    }

    #[test]
    fn a_response_round_trips() {
        let t = Tensor::new("y", vec![1, 2], TensorData::Fp32(vec![0.25, 3.0])).unwrap();
        let body = encode_response("m", Some("1"), std::slice::from_ref(&t));
        assert_eq!(parse_response(&body, Bounds::default()).unwrap(), vec![t]);
    }

    #[test]
    fn fp32_data_takes_the_fast_path_or_the_general_one_alike() {
        let parse = |data: &str| {
            let body = format!(
                r#"{{"inputs":[{{"name":"x","shape":[2,2],"datatype":"FP32","data":{data}}}]}}"#
            );
            parse_request(body.as_bytes(), None, Bounds::default())
                .map(|r| r.inputs[0].data.clone())
        };
        let want = TensorData::Fp32(vec![0.5, 1.0, -2.0, 3.25]);
        assert_eq!(parse("[0.5,1,-2,3.25]").unwrap(), want);
        assert_eq!(parse("[[0.5,1],[-2,3.25]]").unwrap(), want);
        let err = parse("[0.5,1,-2,1e39]").unwrap_err().to_string();
        assert!(err.contains("not an FP32 number"), "{err}");
        assert!(parse(r#"[0.5,1,-2,"3"]"#).is_err());
        assert!(parse("[0.5,1,-2]").is_err());
    }

    #[test]
    fn a_response_writes_shortest_floats_and_null_for_non_finite() {
        let outputs = [
            Tensor::new(
                "p",
                vec![3],
                TensorData::Fp32(vec![0.1, f32::NAN, f32::INFINITY]),
            )
            .unwrap(),
            Tensor::new("l", vec![2], TensorData::Int64(vec![-3, 7])).unwrap(),
            Tensor::new("s", vec![1], TensorData::Bytes(vec![b"cat".to_vec()])).unwrap(),
        ];
        let body = encode_response("m", None, &outputs);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["model_name"], "m");
        assert!(value.get("id").is_none());
        assert_eq!(value["outputs"][0]["datatype"], "FP32");
        assert_eq!(value["outputs"][0]["shape"], serde_json::json!([3]));
        assert_eq!(
            value["outputs"][0]["data"],
            serde_json::json!([0.1, null, null])
        );
        assert!(String::from_utf8(body).unwrap().contains("[0.1,null,null]"));
        assert_eq!(value["outputs"][1]["data"], serde_json::json!([-3, 7]));
        assert_eq!(value["outputs"][2]["data"], serde_json::json!(["cat"]));
    }

    fn one(tensor: &str) -> Result<InferRequest, CodecError> {
        parse_request(
            format!(r#"{{"inputs":[{tensor}]}}"#).as_bytes(),
            None,
            Bounds::default(),
        )
    }

    #[test]
    fn nested_data_must_nest_as_the_shape_does() {
        let data = |shape: &str, data: &str, datatype: &str| {
            one(&format!(
                r#"{{"name":"x","shape":{shape},"datatype":"{datatype}","data":{data}}}"#
            ))
            .map(|r| r.inputs[0].data.clone())
        };
        for datatype in ["FP32", "INT64"] {
            // Flat, or nested exactly as the shape.
            assert!(data("[2,3]", "[1,2,3,4,5,6]", datatype).is_ok());
            assert!(data("[2,3]", "[[1,2,3],[4,5,6]]", datatype).is_ok());
            assert!(data("[1,2,3]", "[[[1,2,3],[4,5,6]]]", datatype).is_ok());
            assert!(data("[]", "7", datatype).is_ok());
            assert!(data("[]", "[7]", datatype).is_ok());
            assert!(data("[0,3]", "[]", datatype).is_ok());
            // Ragged, nested otherwise than the shape, or mixed: refused, though the count may be right.
            for bad in [
                "[[1,2],[3,4,5,6]]",
                "[[1,2,3,4,5,6]]",
                "[[1,2],[3,4],[5,6]]",
                "[1,2,3,[4,5,6]]",
                "[[1,2,3],4,5,6]",
                "[[[1,2,3]],[[4,5,6]]]",
                "[[1,2,3],[4,5,[6]]]",
                "5",
            ] {
                let err = data("[2,3]", bad, datatype).unwrap_err().to_string();
                assert!(err.contains("tensor `x`"), "{bad}: {err}");
            }
            assert!(data("[3]", "[[1],[2],[3]]", datatype).is_err());
        }
        // One element too many is refused as it is read, not after the whole array is built.
        let many = format!("[{}]", vec!["[0]"; 100_000].join(","));
        let err = data("[1,64]", &many, "FP32").unwrap_err().to_string();
        assert!(err.contains("nesting"), "{err}");
        let flat = format!("[{}]", vec!["0"; 100_000].join(","));
        let err = data("[1,64]", &flat, "INT32").unwrap_err().to_string();
        assert!(err.contains("more elements than the shape's 64"), "{err}");
    }

    #[test]
    fn parameters_are_skipped_but_binary_data_size() {
        let bomb = format!("[{}]", vec!["[0]"; 10_000].join(","));
        let req = one(&format!(
            r#"{{"name":"x","shape":[1],"datatype":"FP32","parameters":{{"big":{bomb},"s":"t"}},"data":[2]}}"#
        ))
        .unwrap();
        assert_eq!(req.inputs[0].data, TensorData::Fp32(vec![2.0]));
        let err = one(
            r#"{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":-1}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must be a size"), "{err}");
    }

    #[test]
    fn an_input_name_is_given_once() {
        let t = r#"{"name":"x","shape":[1],"datatype":"FP32","data":[1]}"#;
        let u = r#"{"name":"x","shape":[2],"datatype":"BYTES","data":["a","b"]}"#;
        let err = one(&format!("{t},{u}")).unwrap_err().to_string();
        assert!(err.contains("`x` is given more than once"), "{err}");
        assert!(one(&format!("{t},{}", t.replace("\"x\"", "\"y\""))).is_ok());
    }

    #[test]
    fn errors_quote_client_strings_short_and_name_no_internal_type() {
        let long = "n".repeat(100_000);
        let err = one(&format!(
            r#"{{"name":"{long}","shape":[1],"datatype":"{long}","data":[1]}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(err.len() < 300, "{} bytes", err.len());
        let err = parse_request(
            br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"outputs":["y"]}"#,
            None,
            Bounds::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("Raw"), "{err}");
    }

    #[test]
    fn binary_floats_are_finite_as_json_ones() {
        for bad in [f32::NAN, f32::INFINITY] {
            let json = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#;
            let mut body = json.to_vec();
            body.extend_from_slice(&bad.to_le_bytes());
            let err = parse_request(&body, Some(json.len()), Bounds::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("non-finite"), "{err}");
        }
    }

    #[test]
    fn the_fuzz_corpus_parses_without_panicking() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/infer/corpus/kserve_request");
        let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert!(!entries.is_empty());
        for entry in entries {
            let bytes = std::fs::read(entry.path()).unwrap();
            let _ = parse_request(&bytes, None, Bounds::default());
            let _ = parse_response(&bytes, Bounds::default());
        }
    }
}
