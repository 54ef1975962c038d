//! joblib's array layout: after a `NumpyArrayWrapper` is built, joblib writes the array's bytes straight into the
//! pickle stream (an alignment byte and padding first when the file may be memory-mapped), or, for object arrays, a
//! whole nested pickle. The scanner must skip the former exactly and scan the latter.

use super::value::{Val, V};

#[derive(Debug)]
pub(crate) enum Array {
    /// `bytes` of raw data, preceded by a padding length byte and padding when `aligned`.
    Raw { bytes: u64, aligned: bool },
    /// A nested pickle of the array.
    Objects,
}

fn is_wrapper(v: &Val) -> bool {
    v.as_global().is_some_and(|g| {
        g.name == "NumpyArrayWrapper"
            && matches!(
                g.module.as_str(),
                "joblib.numpy_pickle" | "sklearn.externals.joblib.numpy_pickle"
            )
    })
}

/// `Some` when BUILD targets a joblib array wrapper: the layout of the data that follows, or why it is unknown.
pub(crate) fn wrapper_array(callee: &V, args: &V, state: &V) -> Option<Result<Array, String>> {
    // NEWOBJ gives the class directly; protocols 0 and 1 go through copyreg._reconstructor(cls, object, None).
    let direct = is_wrapper(callee);
    let reconstructed = callee
        .as_global()
        .is_some_and(|g| g.name == "_reconstructor")
        && args.items().first().is_some_and(|c| is_wrapper(c));
    if !(direct || reconstructed) {
        return None;
    }
    Some(layout(state))
}

fn layout(state: &Val) -> Result<Array, String> {
    let dtype = state.dict_get("dtype").ok_or("state has no dtype")?;
    let descr = match &**dtype {
        Val::Object { args, .. } => args
            .items()
            .first()
            .and_then(|d| d.as_str().map(str::to_owned)),
        _ => None,
    }
    .ok_or("dtype is not a plain numpy.dtype")?;
    let Some(itemsize) = itemsize(&descr)? else {
        return Ok(Array::Objects);
    };
    let shape = state.dict_get("shape").ok_or("state has no shape")?;
    let mut count: u64 = 1;
    for dim in shape.items() {
        let Val::Int(d) = **dim else {
            return Err("shape is not a tuple of integers".into());
        };
        let d = u64::try_from(d).map_err(|_| "negative dimension")?;
        count = count.checked_mul(d).ok_or("shape overflows")?;
    }
    let bytes = count.checked_mul(itemsize).ok_or("array size overflows")?;
    let aligned = matches!(
        state.dict_get("numpy_array_alignment_bytes").map(|v| &**v),
        Some(Val::Int(_))
    );
    Ok(Array::Raw { bytes, aligned })
}

/// Item size of a NumPy dtype string such as `f8`, `<i4`, `U10`; `None` for object arrays.
fn itemsize(descr: &str) -> Result<Option<u64>, String> {
    let d = descr.trim_start_matches(['<', '>', '=', '|']);
    let kind = d.chars().next().ok_or("empty dtype")?;
    let digits: String = d.chars().skip(1).take_while(char::is_ascii_digit).collect();
    let n: Option<u64> = digits.parse().ok();
    match (kind, n) {
        ('O', _) => Ok(None),
        ('U', Some(n)) => Ok(Some(n * 4)),
        ('f' | 'i' | 'u' | 'c' | 'b' | 'S' | 'V' | 'M' | 'm' | 'a', Some(n)) => Ok(Some(n)),
        ('?', None) => Ok(Some(1)),
        _ => Err(format!(
            "dtype `{}` has no known item size",
            descr.chars().take(20).collect::<String>()
        )),
    }
}
