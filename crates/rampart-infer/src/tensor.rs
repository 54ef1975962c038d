//! Tensors in the KServe v2 vocabulary.

use crate::InferError;

/// A KServe v2 tensor data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DataType {
    /// `BOOL`
    Bool,
    /// `UINT8`
    Uint8,
    /// `INT32`
    Int32,
    /// `INT64`
    Int64,
    /// `FP32`
    Fp32,
    /// `FP64`
    Fp64,
    /// `BYTES`
    Bytes,
}

impl DataType {
    /// The protocol's name of the type (`FP32`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses the protocol's name of a type.
    pub fn parse(name: &str) -> Option<DataType> {
        Some(match name {
            "BOOL" => DataType::Bool,
            "UINT8" => DataType::Uint8,
            "INT32" => DataType::Int32,
            "INT64" => DataType::Int64,
            "FP32" => DataType::Fp32,
            "FP64" => DataType::Fp64,
            "BYTES" => DataType::Bytes,
            _ => return None,
        })
    }
}

/// A declared input or output: name, type and shape (`-1` for a dimension of any size).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TensorSpec {
    /// The tensor's name.
    pub name: String,
    /// Its data type.
    pub datatype: DataType,
    /// Its shape; `-1` marks a dimension of any size (such as the batch).
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// Checks that `tensor` has this spec's type and a shape it allows.
    pub fn check(&self, tensor: &Tensor) -> Result<(), InferError> {
        if tensor.datatype() != self.datatype {
            return Err(InferError::InvalidInput(format!(
                "input `{}` must be {}, not {}",
                self.name,
                self.datatype.as_str(),
                tensor.datatype().as_str()
            )));
        }
        let fits = tensor.shape.len() == self.shape.len()
            && tensor
                .shape
                .iter()
                .zip(&self.shape)
                .all(|(&got, &want)| want < 0 || u64::try_from(want) == Ok(got as u64));
        if !fits {
            return Err(InferError::InvalidInput(format!(
                "input `{}` has shape {:?}, the model expects {:?}",
                self.name, tensor.shape, self.shape
            )));
        }
        Ok(())
    }
}

/// A tensor's elements, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `BOOL`
    Bool(Vec<bool>),
    /// `UINT8`
    Uint8(Vec<u8>),
    /// `INT32`
    Int32(Vec<i32>),
    /// `INT64`
    Int64(Vec<i64>),
    /// `FP32`
    Fp32(Vec<f32>),
    /// `FP64`
    Fp64(Vec<f64>),
    /// `BYTES`: one byte string per element.
    Bytes(Vec<Vec<u8>>),
}

impl TensorData {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Bool(v) => v.len(),
            TensorData::Uint8(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::Fp32(v) => v.len(),
            TensorData::Fp64(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A named tensor with its shape and elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The tensor's name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its elements, row-major.
    pub data: TensorData,
}

impl Tensor {
    /// Builds a tensor, checking that the shape's element count matches the data's length.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<usize>,
        data: TensorData,
    ) -> Result<Tensor, InferError> {
        let name = name.into();
        let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if count != Some(data.len()) {
            return Err(InferError::InvalidInput(format!(
                "tensor `{name}` has shape {shape:?} but {} elements",
                data.len()
            )));
        }
        Ok(Tensor { name, shape, data })
    }

    /// The tensor's data type.
    pub fn datatype(&self) -> DataType {
        match self.data {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Uint8(_) => DataType::Uint8,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_refuses_a_shape_that_disagrees_with_the_data() {
        assert!(Tensor::new("x", vec![2, 3], TensorData::Fp32(vec![0.0; 5])).is_err());
        assert!(Tensor::new("x", vec![usize::MAX, 3], TensorData::Fp32(vec![])).is_err());
        assert!(Tensor::new("x", vec![2, 3], TensorData::Fp32(vec![0.0; 6])).is_ok());
    }

    #[test]
    fn spec_checks_type_and_shape() {
        let spec = TensorSpec {
            name: "input".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 4],
        };
        let ok = Tensor::new("input", vec![3, 4], TensorData::Fp32(vec![0.0; 12])).unwrap();
        assert!(spec.check(&ok).is_ok());
        let wrong_dim = Tensor::new("input", vec![3, 5], TensorData::Fp32(vec![0.0; 15])).unwrap();
        assert!(spec.check(&wrong_dim).is_err());
        let wrong_type = Tensor::new("input", vec![1, 4], TensorData::Fp64(vec![0.0; 4])).unwrap();
        assert!(spec.check(&wrong_type).is_err());
    }
}
