//! The KServe v2 Open Inference Protocol's JSON: request and response bodies, parsed with bounds.
//!
//! Requests come from untrusted clients: the nesting depth is checked on the raw bytes before any parsing, a shape's
//! element count is checked (with overflow checks) before anything is allocated for it, and a tensor whose `data`
//! disagrees with its `shape` is refused. Triton's binary tensor extension (`Inference-Header-Content-Length`,
//! `binary_data_size`) is understood on input, so `tritonclient` works with its defaults.

use serde::Deserialize;
use serde_json::Value;

use crate::{DataType, Tensor, TensorData};

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

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "accepted for compatibility; no request parameter changes inference"
    )]
    parameters: Option<serde_json::Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<RawTensor<'a>>,
    #[serde(default)]
    outputs: Vec<RawOutput>,
}

#[derive(Deserialize)]
struct RawTensor<'a> {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
    /// Kept as text until the datatype is known: flat FP32 data then parses straight into floats.
    #[serde(default, borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
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
        name: name.to_owned(),
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
        name: name.clone(),
        reason,
    };
    let datatype = DataType::parse(&raw.datatype)
        .ok_or_else(|| bad(format!("unknown datatype `{}`", raw.datatype)))?;
    if raw.shape.len() > 8 {
        return Err(bad("more than 8 dimensions".into()));
    }
    let count = element_count(&name, &raw.shape, bounds.max_elements)?;
    let binary_size = raw
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_size"))
        .map(|v| {
            v.as_u64()
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
        (None, Some(raw)) => match fast_fp32(datatype, raw.get()) {
            Some(data) => data,
            None => {
                let value: Value = serde_json::from_str(raw.get()).map_err(|e| bad(short(&e)))?;
                let mut flat = Vec::with_capacity(count.min(1 << 16));
                flatten(value, &mut flat, count).map_err(bad)?;
                decode_json(datatype, flat).map_err(bad)?
            }
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

/// Flattens nested arrays (row-major), refusing more than `max` elements.
fn flatten(value: Value, out: &mut Vec<Value>, max: usize) -> Result<(), String> {
    match value {
        Value::Array(items) => {
            for item in items {
                flatten(item, out, max)?;
            }
            Ok(())
        }
        scalar => {
            if out.len() >= max {
                return Err(format!("the data has more elements than the shape's {max}"));
            }
            out.push(scalar);
            Ok(())
        }
    }
}

fn decode_json(datatype: DataType, values: Vec<Value>) -> Result<TensorData, String> {
    fn all<T>(
        values: Vec<Value>,
        what: &str,
        f: impl Fn(&Value) -> Option<T>,
    ) -> Result<Vec<T>, String> {
        values
            .iter()
            .map(|v| f(v).ok_or_else(|| format!("element `{}` is not {what}", truncate(v))))
            .collect()
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(all(values, "a boolean", Value::as_bool)?),
        DataType::Uint8 => TensorData::Uint8(all(values, "a UINT8", |v| {
            v.as_u64().and_then(|n| u8::try_from(n).ok())
        })?),
        DataType::Int32 => TensorData::Int32(all(values, "an INT32", |v| {
            v.as_i64().and_then(|n| i32::try_from(n).ok())
        })?),
        DataType::Int64 => TensorData::Int64(all(values, "an INT64", Value::as_i64)?),
        DataType::Fp32 => TensorData::Fp32(all(values, "an FP32 number", |v| {
            v.as_f64().map(|n| n as f32).filter(|n| n.is_finite())
        })?),
        DataType::Fp64 => TensorData::Fp64(all(values, "a number", Value::as_f64)?),
        DataType::Bytes => TensorData::Bytes(all(values, "a string", |v| {
            v.as_str().map(|s| s.as_bytes().to_vec())
        })?),
    })
}

fn truncate(value: &Value) -> String {
    value.to_string().chars().take(24).collect()
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
        DataType::Fp32 => TensorData::Fp32(fixed(bytes, count, f32::from_le_bytes)?),
        DataType::Fp64 => TensorData::Fp64(fixed(bytes, count, f64::from_le_bytes)?),
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
