//! Forward and backward kernels of the differentiable engine, on row-major `f32` tensors.
//!
//! Matrix products go through `ndarray`'s `general_mat_mul` (the pure-Rust `matrixmultiply` kernels); the rest is
//! plain loops. Every backward kernel is checked against finite differences in `engine.rs`'s tests.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

/// A tensor: shape and row-major elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The shape.
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let len = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; len],
        }
    }
}

/// Why a kernel could not run: a shape the engine cannot handle (the graph builder reports the node).
pub type KernelResult<T> = std::result::Result<T, String>;

fn view(
    data: &[f32],
    rows: usize,
    cols: usize,
    transposed: bool,
) -> KernelResult<ArrayView2<'_, f32>> {
    let (r, c) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let v = ArrayView2::from_shape((r, c), data).map_err(|e| e.to_string())?;
    Ok(if transposed { v.reversed_axes() } else { v })
}

/// `out = alpha * op(a) op(b) + beta * out` where `op(a)` is `[m, k]` and `op(b)` is `[k, n]`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    alpha: f32,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    (m, k, n): (usize, usize, usize),
    beta: f32,
    out: &mut [f32],
) -> KernelResult<()> {
    let a = view(a, m, k, trans_a)?;
    let b = view(b, k, n, trans_b)?;
    let mut c = ArrayViewMut2::from_shape((m, n), out).map_err(|e| e.to_string())?;
    general_mat_mul(alpha, &a, &b, beta, &mut c);
    Ok(())
}

/// For each element of a tensor of shape `out`, the index of the element of `input` it reads under numpy
/// broadcasting (shapes aligned on the right; a dimension of 1 repeats).
pub fn broadcast_index(input: &[usize], out: &[usize]) -> KernelResult<Vec<usize>> {
    if input.len() > out.len() {
        return Err(format!("cannot broadcast {input:?} to {out:?}"));
    }
    let offset = out.len() - input.len();
    let mut strides = vec![0usize; out.len()];
    let mut stride = 1;
    for (i, &d) in input.iter().enumerate().rev() {
        let o = out.get(i + offset).copied().unwrap_or(0);
        if d != o && d != 1 {
            return Err(format!("cannot broadcast {input:?} to {out:?}"));
        }
        if let Some(s) = strides.get_mut(i + offset) {
            *s = if d == 1 { 0 } else { stride };
        }
        stride *= d;
    }
    let len: usize = out.iter().product();
    let mut index = Vec::with_capacity(len);
    let mut counter = vec![0usize; out.len()];
    let mut at = 0usize;
    for _ in 0..len {
        index.push(at);
        for axis in (0..out.len()).rev() {
            let (Some(c), Some(&d), Some(&s)) =
                (counter.get_mut(axis), out.get(axis), strides.get(axis))
            else {
                break;
            };
            *c += 1;
            at += s;
            if *c < d {
                break;
            }
            at -= s * d;
            *c = 0;
        }
    }
    Ok(index)
}

/// The broadcast shape of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> KernelResult<Vec<usize>> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank {
                a.get(i + a.len() - rank).copied().unwrap_or(1)
            } else {
                1
            };
            let db = if i + b.len() >= rank {
                b.get(i + b.len() - rank).copied().unwrap_or(1)
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
            }
        })
        .collect()
}

/// Sums `grad` (of the broadcast shape) back onto an operand through its broadcast index.
pub fn unbroadcast(grad: &[f32], index: &[usize], len: usize) -> Vec<f32> {
    let mut out = vec![0.0; len];
    for (&g, &i) in grad.iter().zip(index) {
        if let Some(o) = out.get_mut(i) {
            *o += g;
        }
    }
    out
}

/// The geometry of a 2-D window operation (convolution or pooling) over an NCHW tensor.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Input channels, height, width.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Strides.
    pub strides: [usize; 2],
    /// Pads: top, left, bottom, right.
    pub pads: [usize; 4],
    /// Dilations.
    pub dilations: [usize; 2],
}

impl Window {
    /// The output height and width.
    pub fn out(&self) -> KernelResult<(usize, usize)> {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.strides;
        let [dh, dw] = self.dilations;
        let [pt, pl, pb, pr] = self.pads;
        let eh = dh * (kh - 1) + 1;
        let ew = dw * (kw - 1) + 1;
        let (ph, pw) = (self.h + pt + pb, self.w + pl + pr);
        if ph < eh || pw < ew || sh == 0 || sw == 0 {
            return Err(format!(
                "a {kh}x{kw} window does not fit a {}x{} input",
                self.h, self.w
            ));
        }
        Ok(((ph - eh) / sh + 1, (pw - ew) / sw + 1))
    }

    /// The input position read by kernel offset `(ki, kj)` at output position `(oy, ox)`, if not in the padding.
    fn at(&self, oy: usize, ox: usize, ki: usize, kj: usize) -> Option<usize> {
        let y = (oy * self.strides[0] + ki * self.dilations[0]).checked_sub(self.pads[0])?;
        let x = (ox * self.strides[1] + kj * self.dilations[1]).checked_sub(self.pads[1])?;
        (y < self.h && x < self.w).then_some(y * self.w + x)
    }
}

/// Unfolds one example `[c, h, w]` into columns `[c*kh*kw, oh*ow]` (zero in the padding).
fn im2col(x: &[f32], g: &Window, oh: usize, ow: usize) -> Vec<f32> {
    let [kh, kw] = g.kernel;
    let mut col = vec![0.0; g.c * kh * kw * oh * ow];
    let plane = g.h * g.w;
    let mut row = 0;
    for ch in 0..g.c {
        for ki in 0..kh {
            for kj in 0..kw {
                for oy in 0..oh {
                    for ox in 0..ow {
                        if let Some(p) = g.at(oy, ox, ki, kj) {
                            if let (Some(dst), Some(&v)) = (
                                col.get_mut(row * oh * ow + oy * ow + ox),
                                x.get(ch * plane + p),
                            ) {
                                *dst = v;
                            }
                        }
                    }
                }
                row += 1;
            }
        }
    }
    col
}

/// Folds columns back onto an example, summing overlaps (the adjoint of [`im2col`]).
fn col2im(col: &[f32], g: &Window, oh: usize, ow: usize, dx: &mut [f32]) {
    let [kh, kw] = g.kernel;
    let plane = g.h * g.w;
    let mut row = 0;
    for ch in 0..g.c {
        for ki in 0..kh {
            for kj in 0..kw {
                for oy in 0..oh {
                    for ox in 0..ow {
                        if let Some(p) = g.at(oy, ox, ki, kj) {
                            if let (Some(dst), Some(&v)) = (
                                dx.get_mut(ch * plane + p),
                                col.get(row * oh * ow + oy * ow + ox),
                            ) {
                                *dst += v;
                            }
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// Convolution forward: `x` `[n, c, h, w]`, `weight` `[m, c, kh, kw]`, optional `bias` `[m]`.
pub fn conv_forward(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    g: &Window,
) -> KernelResult<Tensor> {
    let &[n, ..] = x.shape.as_slice() else {
        return Err("the convolution input has no batch dimension".into());
    };
    let &[m, wc, kh, kw] = weight.shape.as_slice() else {
        return Err("the convolution weight is not 4-D".into());
    };
    if wc != g.c || [kh, kw] != g.kernel {
        return Err(format!(
            "the weight {:?} does not match {} input channels",
            weight.shape, g.c
        ));
    }
    let (oh, ow) = g.out()?;
    let k = g.c * kh * kw;
    let mut out = Tensor::zeros(vec![n, m, oh, ow]);
    let in_len = g.c * g.h * g.w;
    let out_len = m * oh * ow;
    for (xi, yi) in x
        .data
        .chunks_exact(in_len)
        .zip(out.data.chunks_exact_mut(out_len))
    {
        let col = im2col(xi, g, oh, ow);
        matmul(
            1.0,
            &weight.data,
            false,
            &col,
            false,
            (m, k, oh * ow),
            0.0,
            yi,
        )?;
        if let Some(b) = bias {
            for (plane, &bv) in yi.chunks_exact_mut(oh * ow).zip(&b.data) {
                plane.iter_mut().for_each(|v| *v += bv);
            }
        }
    }
    Ok(out)
}

/// Convolution backward to the input: `dy` `[n, m, oh, ow]` gives `dx` `[n, c, h, w]`.
pub fn conv_backward(dy: &[f32], weight: &Tensor, g: &Window, n: usize) -> KernelResult<Vec<f32>> {
    let &[m, _, kh, kw] = weight.shape.as_slice() else {
        return Err("the convolution weight is not 4-D".into());
    };
    let (oh, ow) = g.out()?;
    let k = g.c * kh * kw;
    let in_len = g.c * g.h * g.w;
    let mut dx = vec![0.0; n * in_len];
    let mut dcol = vec![0.0; k * oh * ow];
    for (dyi, dxi) in dy
        .chunks_exact(m * oh * ow)
        .zip(dx.chunks_exact_mut(in_len))
    {
        matmul(
            1.0,
            &weight.data,
            true,
            dyi,
            false,
            (k, m, oh * ow),
            0.0,
            &mut dcol,
        )?;
        col2im(&dcol, g, oh, ow, dxi);
    }
    Ok(dx)
}

/// What max-pooling remembers for its backward pass: for each output, the input positions that hold the maximum.
/// Ties share the gradient equally (a valid subgradient of `max`; the share is divided, never multiplied).
#[derive(Debug, Clone, Default)]
pub struct PoolTape {
    winners: Vec<u32>,
    starts: Vec<u32>,
}

/// Max-pooling forward over `[n, c, h, w]` (the padding never wins).
pub fn maxpool_forward(x: &Tensor, g: &Window) -> KernelResult<(Tensor, PoolTape)> {
    let &[n, c, h, w] = x.shape.as_slice() else {
        return Err("max-pooling needs an NCHW input".into());
    };
    let (oh, ow) = g.out()?;
    let mut out = Tensor::zeros(vec![n, c, oh, ow]);
    let mut tape = PoolTape::default();
    let [kh, kw] = g.kernel;
    let mut window = Vec::with_capacity(kh * kw);
    let mut o = 0usize;
    for plane_index in 0..n * c {
        let base = plane_index * h * w;
        for oy in 0..oh {
            for ox in 0..ow {
                window.clear();
                for ki in 0..kh {
                    for kj in 0..kw {
                        if let Some(p) = g.at(oy, ox, ki, kj) {
                            if let Some(&v) = x.data.get(base + p) {
                                window.push((base + p, v));
                            }
                        }
                    }
                }
                let best = window
                    .iter()
                    .map(|&(_, v)| v)
                    .fold(f32::NEG_INFINITY, f32::max);
                tape.starts.push(
                    u32::try_from(tape.winners.len())
                        .map_err(|_| "the pooling tape is too large")?,
                );
                for &(p, v) in &window {
                    if v == best {
                        tape.winners
                            .push(u32::try_from(p).map_err(|_| "the input is too large")?);
                    }
                }
                if let Some(slot) = out.data.get_mut(o) {
                    *slot = best;
                }
                o += 1;
            }
        }
    }
    tape.starts
        .push(u32::try_from(tape.winners.len()).map_err(|_| "the pooling tape is too large")?);
    Ok((out, tape))
}

/// Max-pooling backward: each output's gradient split equally among its tied maxima.
pub fn maxpool_backward(dy: &[f32], tape: &PoolTape, input_len: usize) -> Vec<f32> {
    let mut dx = vec![0.0; input_len];
    for (o, &g) in dy.iter().enumerate() {
        let (Some(&s), Some(&e)) = (tape.starts.get(o), tape.starts.get(o + 1)) else {
            continue;
        };
        let winners = tape.winners.get(s as usize..e as usize).unwrap_or(&[]);
        if winners.is_empty() {
            continue;
        }
        let share = g / winners.len() as f32;
        for &p in winners {
            if let Some(d) = dx.get_mut(p as usize) {
                *d += share;
            }
        }
    }
    dx
}

/// Softmax over the last axis of rows of length `k`.
pub fn softmax_rows(x: &[f32], k: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    if k == 0 {
        return out;
    }
    for row in out.chunks_exact_mut(k) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        row.iter_mut().for_each(|v| *v /= sum);
    }
    out
}

/// Softmax backward from its output `y`: `dx = y * (dy - sum(dy * y))`.
pub fn softmax_backward(y: &[f32], dy: &[f32], k: usize) -> Vec<f32> {
    let mut dx = vec![0.0; y.len()];
    if k == 0 {
        return dx;
    }
    for ((yr, dyr), dxr) in y
        .chunks_exact(k)
        .zip(dy.chunks_exact(k))
        .zip(dx.chunks_exact_mut(k))
    {
        let dot: f32 = yr.iter().zip(dyr).map(|(a, b)| a * b).sum();
        for ((d, &yv), &g) in dxr.iter_mut().zip(yr).zip(dyr) {
            *d = yv * (g - dot);
        }
    }
    dx
}
