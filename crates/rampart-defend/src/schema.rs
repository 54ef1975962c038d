//! Value-range and schema checks of tabular inputs against the training data's [`Profile`].

use rampart_infer::{Tensor, TensorData};

use crate::profile::Profile;
use crate::DefendError;

/// How far outside the training range a value may fall, as a fraction of the feature's range (default 0: the
/// training range exactly; raise it for features whose future values legitimately drift).
#[derive(Debug, Clone)]
pub struct SchemaCheck {
    names: Vec<String>,
    bounds: Vec<(f64, f64)>,
}

impl SchemaCheck {
    /// Builds the check from a profile with `tolerance` ≥ 0.
    pub fn new(profile: &Profile, tolerance: f64) -> Result<SchemaCheck, DefendError> {
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(DefendError::Config(format!(
                "range tolerance `{tolerance}` must be a finite number >= 0"
            )));
        }
        let bounds = profile
            .features
            .iter()
            .map(|f| {
                let slack = tolerance * (f.max - f.min);
                (f.min - slack, f.max + slack)
            })
            .collect();
        Ok(SchemaCheck {
            names: profile.features.iter().map(|f| f.name.clone()).collect(),
            bounds,
        })
    }

    /// Checks a `[N, features]` `FP32`/`FP64` tensor: its type, width, finiteness and every value's range.
    pub fn check(&self, tensor: &Tensor) -> Result<(), DefendError> {
        if !matches!(tensor.data, TensorData::Fp32(_) | TensorData::Fp64(_)) {
            return Err(DefendError::Input(format!(
                "tensor `{}` is {}; the profile's features are numbers (FP32 or FP64)",
                tensor.name,
                tensor.datatype().as_str()
            )));
        }
        if tensor.shape.len() != 2 || tensor.shape.get(1) != Some(&self.names.len()) {
            return Err(DefendError::Input(format!(
                "tensor `{}` has shape {:?}; the profile has {} features per row",
                tensor.name,
                tensor.shape,
                self.names.len()
            )));
        }
        let (_, width, values) = crate::rows_of(tensor)?;
        for (i, &v) in values.iter().enumerate() {
            let (row, j) = (i / width, i % width);
            let (lo, hi) = self.bounds.get(j).copied().unwrap_or((0.0, 0.0));
            let name = self.names.get(j).map_or("?", String::as_str);
            if !v.is_finite() {
                return Err(DefendError::Input(format!(
                    "row {row}: feature `{name}` is not a finite number"
                )));
            }
            if f64::from(v) < lo || f64::from(v) > hi {
                return Err(DefendError::Input(format!(
                    "row {row}: feature `{name}` = {v} is outside the training range [{lo}, {hi}]"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_type_width_and_range() {
        let p = Profile::from_csv("a,b,label\n0,10,0\n1,20,1\n".as_bytes(), "label", 10).unwrap();
        let strict = SchemaCheck::new(&p, 0.0).unwrap();
        let t = |v: Vec<f32>| Tensor::new("x", vec![v.len() / 2, 2], TensorData::Fp32(v)).unwrap();
        assert!(strict.check(&t(vec![0.5, 15.0, 1.0, 20.0])).is_ok());
        let err = strict
            .check(&t(vec![0.5, 15.0, 1.0, 21.0]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid input: row 1: feature `b` = 21 is outside the training range [10, 20]"
        );
        assert!(SchemaCheck::new(&p, 0.1)
            .unwrap()
            .check(&t(vec![1.0, 21.0]))
            .is_ok());
        assert!(strict
            .check(&t(vec![f32::NAN, 15.0]))
            .unwrap_err()
            .to_string()
            .contains("finite"));
        let wide = Tensor::new("x", vec![1, 3], TensorData::Fp32(vec![0.0; 3])).unwrap();
        assert!(strict.check(&wide).is_err());
        let ints = Tensor::new("x", vec![1, 2], TensorData::Int64(vec![0, 10])).unwrap();
        assert!(strict
            .check(&ints)
            .unwrap_err()
            .to_string()
            .contains("INT64"));
        assert!(SchemaCheck::new(&p, -1.0).is_err());
    }
}
