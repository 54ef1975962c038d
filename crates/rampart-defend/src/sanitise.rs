//! Input sanitisers for images held as rows of `FP32` values in `[0, 1]`, laid out height × width × channels.
//!
//! Each removes detail an adversarial perturbation relies on while keeping what the model needs. The median and
//! Gaussian filters reproduce `scipy.ndimage.median_filter` / `gaussian_filter` with their default `reflect` edges
//! (`d c b a | a b c d | d c b a`), so a defence tuned in Python behaves the same here.

use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

use crate::DefendError;

/// The layout of one image row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageShape {
    /// Rows of pixels.
    pub height: usize,
    /// Columns of pixels.
    pub width: usize,
    /// Channels per pixel (1 grey, 3 RGB).
    pub channels: usize,
}

impl ImageShape {
    /// Values per image.
    /// Values per image (saturating: a shape too large to hold is as large as can be, never a small wrapped one).
    pub fn len(&self) -> usize {
        self.height
            .saturating_mul(self.width)
            .saturating_mul(self.channels)
    }

    /// Whether the shape holds no pixel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(&self, row: &[f32]) -> Result<(), DefendError> {
        if self.is_empty() || row.len() != self.len() {
            return Err(DefendError::Input(format!(
                "an image row has {} values, the configured shape {}x{}x{} needs {}",
                row.len(),
                self.height,
                self.width,
                self.channels,
                self.len()
            )));
        }
        Ok(())
    }
}

/// One sanitiser with its setting; the gateway's config names them with `kind`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sanitiser {
    /// Round each value to `bits` bits (`2^bits` levels), ties to even.
    BitDepth {
        /// Bits per value, 1 to 16.
        bits: u32,
    },
    /// Median over a `size` × `size` window per channel (scipy's window and edges).
    Median {
        /// Window side, 1 to 15.
        size: usize,
    },
    /// Gaussian smoothing with standard deviation `sigma` pixels, truncated at 4 sigma (scipy's default).
    Gaussian {
        /// Standard deviation in pixels, above 0 and at most 10.
        sigma: f64,
    },
    /// Keep only spatial frequencies up to `cutoff` cycles per pixel (0 < cutoff <= 0.5) in the 2-D Fourier domain.
    LowPass {
        /// The radius of the kept disc in cycles per pixel.
        cutoff: f64,
    },
    /// Encode as JPEG at `quality` (1 to 100) and decode again.
    Jpeg {
        /// The JPEG quality.
        quality: u8,
    },
}

impl Sanitiser {
    /// Checks the setting once, at configuration load.
    pub fn validate(&self) -> Result<(), DefendError> {
        let ok = match *self {
            Sanitiser::BitDepth { bits } => (1..=16).contains(&bits),
            Sanitiser::Median { size } => (1..=15).contains(&size),
            Sanitiser::Gaussian { sigma } => sigma > 0.0 && sigma <= 10.0,
            Sanitiser::LowPass { cutoff } => cutoff > 0.0 && cutoff <= 0.5,
            Sanitiser::Jpeg { quality } => (1..=100).contains(&quality),
        };
        if ok {
            Ok(())
        } else {
            Err(DefendError::Config(format!(
                "sanitiser {self:?} is out of range; see the limits in the documentation"
            )))
        }
    }

    /// Sanitises one image row in place.
    pub fn apply(&self, row: &mut [f32], shape: ImageShape) -> Result<(), DefendError> {
        shape.check(row)?;
        self.validate()?;
        match *self {
            Sanitiser::BitDepth { bits } => bit_depth(row, bits),
            Sanitiser::Median { size } => median(row, shape, size),
            Sanitiser::Gaussian { sigma } => gaussian(row, shape, sigma),
            Sanitiser::LowPass { cutoff } => low_pass(row, shape, cutoff),
            Sanitiser::Jpeg { quality } => jpeg(row, shape, quality)?,
        }
        Ok(())
    }

    /// Sanitises every row of a flat batch.
    pub fn apply_batch(&self, values: &mut [f32], shape: ImageShape) -> Result<(), DefendError> {
        if shape.is_empty() || values.len() % shape.len() != 0 {
            return Err(DefendError::Input(format!(
                "{} values are not a whole number of {}x{}x{} images",
                values.len(),
                shape.height,
                shape.width,
                shape.channels
            )));
        }
        values
            .chunks_mut(shape.len())
            .try_for_each(|row| self.apply(row, shape))
    }
}

/// `round(x * (2^bits - 1)) / (2^bits - 1)` with ties to even, after clamping to `[0, 1]`; NaN becomes 0.
pub fn bit_depth(row: &mut [f32], bits: u32) {
    let levels = ((1_u32 << bits.clamp(1, 16)) - 1) as f32;
    for v in row.iter_mut() {
        let x = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
        *v = round_ties_even_small(x * levels) / levels;
    }
}

/// `y.round_ties_even()` for `0 <= y < 2^23`, without the library call that baseline x86-64 makes of it: adding
/// 2^23 leaves no fraction bit, so the sum is rounded to an integer in the default mode (to nearest, ties to even,
/// and 2^23 is even), and subtracting it again is exact.
fn round_ties_even_small(y: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    (y + TWO_23) - TWO_23
}

/// scipy's `reflect` mode: the index folded into `0..n` with the edge value repeated.
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - 1 - m }) as usize
}

fn at(row: &[f32], shape: ImageShape, y: usize, x: usize, c: usize) -> f32 {
    row.get((y * shape.width + x) * shape.channels + c)
        .copied()
        .unwrap_or(0.0)
}

/// A `size` × `size` median per channel. Like scipy, the window spans offsets `-(size/2) ..= size - 1 - size/2`
/// and takes the element of rank `size²/2` (the upper median for even windows) in [`f32::total_cmp`]'s order.
pub fn median(row: &mut [f32], shape: ImageShape, size: usize) {
    if size == 0 {
        return;
    }
    // Integer keys in total order: the selection compares integers, and every rank is exact.
    let keys: Vec<i32> = row.iter().map(|&v| order_key(v)).collect();
    if size == 2 {
        median_2x2(row, &keys, shape);
        return;
    }
    let center = (size / 2) as isize;
    let rank = size * size / 2;
    let (width, channels) = (shape.width, shape.channels);
    // The reflected coordinates of each window, once per axis rather than once per pixel and channel.
    let offsets = |n: usize| -> Vec<usize> {
        (0..n as isize)
            .flat_map(|i| (0..size as isize).map(move |d| reflect(i + d - center, n)))
            .collect()
    };
    let (rows, columns) = (offsets(shape.height), offsets(width));
    let mut window = Vec::with_capacity(size * size);
    let mut out = row.iter_mut();
    for ys in rows.chunks_exact(size) {
        for xs in columns.chunks_exact(size) {
            for c in 0..channels {
                let Some(target) = out.next() else { return };
                window.clear();
                for &yy in ys {
                    window.extend(xs.iter().map(|&xx| {
                        keys.get((yy * width + xx) * channels + c)
                            .copied()
                            .unwrap_or(0)
                    }));
                }
                let last = window.len().saturating_sub(1);
                // A sorting network for the 3 × 3 window (2 × 2 has its own function); a selection for the others.
                let chosen = match window.as_slice() {
                    [] => continue,
                    &[a, b, c, d, e, f, g, h, i] => median_of_9([a, b, c, d, e, f, g, h, i]),
                    _ => *window.select_nth_unstable(rank.min(last)).1,
                };
                *target = from_order_key(chosen);
            }
        }
    }
}

/// [`median`] of size 2 (the detector's default squeezer), without the general window: the window of `(y, x)` is
/// rows `y - 1, y` and columns `x - 1, x`, where scipy's reflection maps `-1` to `0`.
fn median_2x2(row: &mut [f32], keys: &[i32], shape: ImageShape) {
    let (width, channels) = (shape.width, shape.channels);
    let key = |y: usize, x: usize, c: usize| {
        keys.get((y * width + x) * channels + c)
            .copied()
            .unwrap_or(0)
    };
    for y in 0..shape.height {
        let above = y.saturating_sub(1);
        for x in 0..width {
            let left = x.saturating_sub(1);
            for c in 0..channels {
                let chosen = upper_median_of_4(
                    key(above, left, c),
                    key(above, x, c),
                    key(y, left, c),
                    key(y, x, c),
                );
                match row.get_mut((y * width + x) * channels + c) {
                    Some(target) => *target = from_order_key(chosen),
                    None => return,
                }
            }
        }
    }
}

/// The bits of `v` as an `i32` whose integer order is [`f32::total_cmp`]'s order (negative values have their
/// magnitude bits flipped). The map is its own inverse.
fn order_key(v: f32) -> i32 {
    flip_magnitude_if_negative(v.to_bits() as i32)
}

fn from_order_key(key: i32) -> f32 {
    f32::from_bits(flip_magnitude_if_negative(key) as u32)
}

/// The magnitude bits flipped when the sign bit is set; the sign bit, which decides, is kept.
fn flip_magnitude_if_negative(bits: i32) -> i32 {
    bits ^ ((((bits >> 31) as u32) >> 1) as i32)
}

/// The element of rank 2 (of 0..=3) of four: the smaller of the two pairs' maxima or the larger of their minima,
/// whichever is larger.
fn upper_median_of_4(a: i32, b: i32, c: i32, d: i32) -> i32 {
    let (low_ab, high_ab) = (a.min(b), a.max(b));
    let (low_cd, high_cd) = (c.min(d), c.max(d));
    high_ab.min(high_cd).max(low_ab.max(low_cd))
}

/// The median of nine by the 19 compare-exchanges of Paeth's network (as in N. Devillard's `opt_med9`); where
/// only one side of an exchange is read again, only that side is computed.
fn median_of_9(p: [i32; 9]) -> i32 {
    let [mut p0, mut p1, mut p2, mut p3, mut p4, mut p5, mut p6, mut p7, mut p8] = p;
    macro_rules! exchange {
        ($($a:ident $b:ident),*) => {$( ($a, $b) = ($a.min($b), $a.max($b)); )*};
    }
    exchange!(p1 p2, p4 p5, p7 p8, p0 p1, p3 p4, p6 p7, p1 p2, p4 p5, p7 p8);
    p3 = p0.max(p3);
    p5 = p5.min(p8);
    exchange!(p4 p7);
    p6 = p3.max(p6);
    p4 = p1.max(p4);
    p2 = p2.min(p5);
    p4 = p4.min(p7);
    exchange!(p4 p2);
    p6.max(p4).min(p2)
}

/// scipy's Gaussian kernel: radius `int(4 sigma + 0.5)`, weights `exp(-x²/2σ²)` normalised to sum 1.
fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as isize;
    let weights: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total).collect()
}

/// Separable Gaussian smoothing (rows, then columns) in `f64`, reflect edges. Each value sums its taps in kernel
/// order, as scipy's correlation does.
pub fn gaussian(row: &mut [f32], shape: ImageShape, sigma: f64) {
    let kernel = gaussian_kernel(sigma);
    let taps = kernel.len();
    let radius = (taps / 2) as isize;
    let (h, w, ch) = (shape.height, shape.width, shape.channels);
    if taps == 0 || h == 0 || w == 0 || ch == 0 || row.len() != h * w * ch {
        return;
    }
    // The reflected source of each tap, once per axis.
    let sources = |n: usize| -> Vec<usize> {
        (0..n as isize)
            .flat_map(|i| (0..taps as isize).map(move |k| reflect(i + k - radius, n)))
            .collect()
    };
    let (xs, ys) = (sources(w), sources(h));
    let line = w * ch;
    // Along each row.
    let mut first = vec![0.0_f64; row.len()];
    for (source, smoothed) in row.chunks_exact(line).zip(first.chunks_exact_mut(line)) {
        for (pixel, taps_of_x) in smoothed.chunks_exact_mut(ch).zip(xs.chunks_exact(taps)) {
            for (c, out) in pixel.iter_mut().enumerate() {
                let mut acc = 0.0;
                for (weight, &xx) in kernel.iter().zip(taps_of_x) {
                    acc += weight * f64::from(source.get(xx * ch + c).copied().unwrap_or(0.0));
                }
                *out = acc;
            }
        }
    }
    // Along each column, a whole row of sums at a time (each still adds its taps in kernel order).
    let mut sums = vec![0.0_f64; line];
    for (out, taps_of_y) in row.chunks_exact_mut(line).zip(ys.chunks_exact(taps)) {
        sums.fill(0.0);
        for (weight, &yy) in kernel.iter().zip(taps_of_y) {
            let source = first.get(yy * line..(yy + 1) * line).unwrap_or_default();
            for (acc, &v) in sums.iter_mut().zip(source) {
                *acc += weight * v;
            }
        }
        for (o, &acc) in out.iter_mut().zip(&sums) {
            *o = acc as f32;
        }
    }
}

/// The signed frequency of FFT bin `k` of `n`, in cycles per sample.
fn frequency(k: usize, n: usize) -> f64 {
    let k = k as f64;
    let n = n as f64;
    if k < n / 2.0 || (k - n / 2.0).abs() < f64::EPSILON {
        k / n
    } else {
        k / n - 1.0
    }
}

/// Zeroes the 2-D spectrum outside the disc of radius `cutoff` (cycles per pixel), per channel; the result is clamped
/// to `[0, 1]`.
pub fn low_pass(row: &mut [f32], shape: ImageShape, cutoff: f64) {
    let (h, w, ch) = (shape.height, shape.width, shape.channels);
    let mut planner = FftPlanner::<f64>::new();
    let (row_fft, row_ifft) = (planner.plan_fft_forward(w), planner.plan_fft_inverse(w));
    let (col_fft, col_ifft) = (planner.plan_fft_forward(h), planner.plan_fft_inverse(h));
    for c in 0..ch {
        let mut grid: Vec<Complex<f64>> = (0..h * w)
            .map(|i| Complex::new(f64::from(at(row, shape, i / w, i % w, c)), 0.0))
            .collect();
        grid.chunks_mut(w).for_each(|r| row_fft.process(r));
        let mut column = vec![Complex::new(0.0, 0.0); h];
        for x in 0..w {
            for (y, cell) in column.iter_mut().enumerate() {
                *cell = grid.get(y * w + x).copied().unwrap_or_default();
            }
            col_fft.process(&mut column);
            for (y, cell) in column.iter_mut().enumerate() {
                let (fy, fx) = (frequency(y, h), frequency(x, w));
                if (fy * fy + fx * fx).sqrt() > cutoff {
                    *cell = Complex::new(0.0, 0.0);
                }
            }
            col_ifft.process(&mut column);
            for (y, cell) in column.iter().enumerate() {
                if let Some(g) = grid.get_mut(y * w + x) {
                    *g = *cell;
                }
            }
        }
        grid.chunks_mut(w).for_each(|r| row_ifft.process(r));
        let scale = (h * w) as f64;
        for (i, value) in grid.iter().enumerate() {
            if let Some(out) = row.get_mut(i * ch + c) {
                *out = (value.re / scale).clamp(0.0, 1.0) as f32;
            }
        }
    }
}

/// JPEG round trip at `quality` through 8-bit pixels (grey for one channel, RGB for three).
pub fn jpeg(row: &mut [f32], shape: ImageShape, quality: u8) -> Result<(), DefendError> {
    use image::{ExtendedColorType, ImageEncoder};
    let color = match shape.channels {
        1 => ExtendedColorType::L8,
        3 => ExtendedColorType::Rgb8,
        other => {
            return Err(DefendError::Config(format!(
                "JPEG re-encoding needs 1 or 3 channels, not {other}"
            )))
        }
    };
    let (width, height) = match (u32::try_from(shape.width), u32::try_from(shape.height)) {
        (Ok(w), Ok(h)) if w <= 65_535 && h <= 65_535 => (w, h),
        _ => {
            return Err(DefendError::Input(
                "image too large for JPEG re-encoding".into(),
            ))
        }
    };
    let pixels: Vec<u8> = row
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8)
        .collect();
    let mut encoded = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, quality)
        .write_image(&pixels, width, height, color)
        .map_err(|e| DefendError::Input(format!("JPEG re-encoding failed: {e}")))?;
    let decoded = image::load_from_memory_with_format(&encoded, image::ImageFormat::Jpeg)
        .map_err(|e| DefendError::Input(format!("JPEG re-decoding failed: {e}")))?;
    let bytes = if shape.channels == 1 {
        decoded.into_luma8().into_raw()
    } else {
        decoded.into_rgb8().into_raw()
    };
    for (out, b) in row.iter_mut().zip(bytes) {
        *out = f32::from(b) / 255.0;
    }
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::excessive_precision,
    reason = "scipy's values as it prints them"
)]
mod tests {
    use super::*;

    const GREY4: ImageShape = ImageShape {
        height: 4,
        width: 4,
        channels: 1,
    };

    fn ramp() -> Vec<f32> {
        // 4x4 values 0/15 .. 15/15 with a spike.
        let mut v: Vec<f32> = (0..16).map(|i| i as f32 / 15.0).collect();
        v[5] = 1.0;
        v
    }

    #[test]
    fn bit_depth_rounds_ties_to_even() {
        // One bit: 0.5 is a tie between 0 and 1 and goes to 0 (even); 0.5000001 goes to 1.
        let mut v = vec![0.5, 0.500_001, 0.25, -3.0, 7.0, f32::NAN];
        bit_depth(&mut v, 1);
        assert_eq!(v, vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
        // Two bits: x*3 = 1.5 ties to 2 (even) -> 2/3; 0.5*3 = 1.5 -> 2/3; 1/6*3 = 0.5 -> 0.
        let mut v = vec![0.5, 1.0 / 6.0, 0.1];
        bit_depth(&mut v, 2);
        assert_eq!(v, vec![2.0 / 3.0, 0.0, 0.0]);
    }

    #[test]
    fn bit_depth_rounding_is_round_ties_even() {
        // Every tie (k + 0.5) up to 2^16 and a sweep of values between, at the scale bit_depth uses.
        for k in 0..65_536_u32 {
            for y in [
                k as f32,
                k as f32 + 0.5,
                k as f32 + 0.25,
                (k as f32 + 0.5).next_down(),
                (k as f32 + 0.5).next_up(),
            ] {
                assert_eq!(round_ties_even_small(y), y.round_ties_even(), "{y}");
            }
        }
    }

    /// Deterministic pseudo-random values in `[0, 1]`, with repeats (ties) and signed zeros mixed in.
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                match state % 11 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => 0.5,
                    _ => (state >> 40) as f32 / (1_u64 << 24) as f32,
                }
            })
            .collect()
    }

    /// The filters as first written: a sort per window, a reflected lookup per tap.
    fn median_by_sort(row: &mut [f32], shape: ImageShape, size: usize) {
        let source = row.to_vec();
        let center = (size / 2) as isize;
        let mut window = Vec::new();
        for y in 0..shape.height {
            for x in 0..shape.width {
                for c in 0..shape.channels {
                    window.clear();
                    for dy in 0..size as isize {
                        for dx in 0..size as isize {
                            let yy = reflect(y as isize + dy - center, shape.height);
                            let xx = reflect(x as isize + dx - center, shape.width);
                            window.push(at(&source, shape, yy, xx, c));
                        }
                    }
                    window.sort_by(f32::total_cmp);
                    row[(y * shape.width + x) * shape.channels + c] = window[size * size / 2];
                }
            }
        }
    }

    fn gaussian_per_value(row: &mut [f32], shape: ImageShape, sigma: f64) {
        let kernel = gaussian_kernel(sigma);
        let radius = (kernel.len() / 2) as isize;
        let (h, w, ch) = (shape.height, shape.width, shape.channels);
        let mut first = vec![0.0_f64; row.len()];
        for y in 0..h {
            for x in 0..w {
                for c in 0..ch {
                    let mut acc = 0.0;
                    for (k, weight) in kernel.iter().enumerate() {
                        let xx = reflect(x as isize + k as isize - radius, w);
                        acc += weight * f64::from(at(row, shape, y, xx, c));
                    }
                    first[(y * w + x) * ch + c] = acc;
                }
            }
        }
        for y in 0..h {
            for x in 0..w {
                for c in 0..ch {
                    let mut acc = 0.0;
                    for (k, weight) in kernel.iter().enumerate() {
                        let yy = reflect(y as isize + k as isize - radius, h);
                        acc += weight * first[(yy * w + x) * ch + c];
                    }
                    row[(y * w + x) * ch + c] = acc as f32;
                }
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn shapes() -> Vec<ImageShape> {
        [
            (1, 1, 1),
            (1, 7, 1),
            (6, 1, 3),
            (3, 2, 1),
            (8, 8, 1),
            (5, 9, 3),
            (13, 11, 2),
        ]
        .into_iter()
        .map(|(height, width, channels)| ImageShape {
            height,
            width,
            channels,
        })
        .collect()
    }

    #[test]
    fn median_equals_a_sort_per_window_bit_for_bit() {
        for (s, shape) in shapes().into_iter().enumerate() {
            for size in 1..=7 {
                let input = noise(shape.len(), (s * 31 + size) as u64);
                let (mut fast, mut slow) = (input.clone(), input);
                median(&mut fast, shape, size);
                median_by_sort(&mut slow, shape, size);
                assert_eq!(bits(&fast), bits(&slow), "{shape:?} size {size}");
            }
        }
    }

    #[test]
    fn gaussian_equals_the_per_value_sums_bit_for_bit() {
        for (s, shape) in shapes().into_iter().enumerate() {
            for sigma in [0.3, 0.5, 1.0, 2.5] {
                let input = noise(shape.len(), s as u64 + 99);
                let (mut fast, mut slow) = (input.clone(), input);
                gaussian(&mut fast, shape, sigma);
                gaussian_per_value(&mut slow, shape, sigma);
                assert_eq!(bits(&fast), bits(&slow), "{shape:?} sigma {sigma}");
            }
        }
    }

    // Expected values from scipy.ndimage.median_filter(a, size) / gaussian_filter(a, sigma) on `ramp()`.
    include!("sanitise_cases.rs");

    #[test]
    fn median_matches_scipy_at_the_edges() {
        for (size, want) in [(2, MEDIAN2), (3, MEDIAN3), (5, MEDIAN5)] {
            let mut v = ramp();
            median(&mut v, GREY4, size);
            for (got, want) in v.iter().zip(want) {
                assert!((got - want).abs() < 1e-6, "size {size}: {v:?} != {want:?}");
            }
        }
    }

    #[test]
    fn gaussian_matches_scipy() {
        for (sigma, want) in [(0.5, GAUSS05), (1.0, GAUSS1), (3.0, GAUSS3)] {
            let mut v = ramp();
            gaussian(&mut v, GREY4, sigma);
            for (got, want) in v.iter().zip(want) {
                assert!(
                    (got - want).abs() < 1e-5,
                    "sigma {sigma}: {v:?} != {want:?}"
                );
            }
        }
    }

    #[test]
    fn low_pass_keeps_the_mean_and_removes_the_finest_pattern() {
        // A checkerboard is the highest frequency (0.5, 0.5): a cutoff of 0.25 leaves only its mean.
        let mut v: Vec<f32> = (0..16).map(|i| ((i / 4 + i % 4) % 2) as f32).collect();
        low_pass(&mut v, GREY4, 0.25);
        assert!(v.iter().all(|x| (x - 0.5).abs() < 1e-6), "{v:?}");
        // The disc of radius 0.5 keeps the axis frequency (0, 0.5) of alternating columns, but not the corner
        // (0.5, 0.5) of the checkerboard, which lies at radius 0.707 outside it.
        let columns: Vec<f32> = (0..16).map(|i| (i % 2) as f32).collect();
        let mut v = columns.clone();
        low_pass(&mut v, GREY4, 0.5);
        assert!(
            v.iter().zip(&columns).all(|(a, b)| (a - b).abs() < 1e-6),
            "{v:?}"
        );
        let mut v: Vec<f32> = (0..16).map(|i| ((i / 4 + i % 4) % 2) as f32).collect();
        low_pass(&mut v, GREY4, 0.5);
        assert!(v.iter().all(|x| (x - 0.5).abs() < 1e-6), "{v:?}");
    }

    #[test]
    fn jpeg_round_trip_stays_close_and_refuses_odd_channels() {
        let shape = ImageShape {
            height: 8,
            width: 8,
            channels: 1,
        };
        let original: Vec<f32> = (0..64).map(|i| ((i % 8) as f32) / 7.0).collect();
        let mut v = original.clone();
        jpeg(&mut v, shape, 90).unwrap();
        let err: f32 = v
            .iter()
            .zip(&original)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / 64.0;
        assert!(err < 0.03, "mean error {err}");
        assert_ne!(v, original);
        let two = ImageShape {
            channels: 2,
            ..shape
        };
        assert!(jpeg(&mut vec![0.0; 128], two, 90).is_err());
    }

    #[test]
    fn settings_are_validated_and_rows_checked() {
        assert!(Sanitiser::BitDepth { bits: 0 }.validate().is_err());
        assert!(Sanitiser::LowPass { cutoff: 0.7 }.validate().is_err());
        assert!(Sanitiser::Median { size: 2 }
            .apply(&mut [0.0; 15], GREY4)
            .is_err());
        let parsed: Sanitiser = serde_json::from_str(r#"{"kind":"bit_depth","bits":2}"#).unwrap();
        assert_eq!(parsed, Sanitiser::BitDepth { bits: 2 });
        assert!(serde_json::from_str::<Sanitiser>(r#"{"kind":"bit_depth","bitz":2}"#).is_err());
    }
}
