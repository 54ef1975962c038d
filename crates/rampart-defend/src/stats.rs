//! Small statistical helpers: the normal distribution, the binomial upper tail, quantiles.

/// The complementary error function (Numerical Recipes' Chebyshev fit, relative error below 1.2e-7).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let ans = t * poly.exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

/// The standard normal upper tail `P(Z > z)`.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The standard normal quantile: bisection on [`normal_sf`] (bounded, 200 steps), good to its accuracy.
pub fn normal_ppf(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let (mut lo, mut hi) = (-40.0_f64, 40.0_f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        // P(Z <= mid) = 1 - sf(mid)
        if 1.0 - normal_sf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// `P(X >= k)` for `X ~ Binomial(n, p)`, summed in log space (exact to floating point; `O(n - k)`).
pub fn binomial_sf(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    // ln C(n, k) by a sum of logs.
    let mut ln_term = 0.0_f64;
    for j in 1..=k {
        ln_term += ((n - k + j) as f64).ln() - (j as f64).ln();
    }
    ln_term += k as f64 * p.ln() + (n - k) as f64 * (1.0 - p).ln();
    let ratio = (p / (1.0 - p)).ln();
    let mut total = 0.0_f64;
    let mut i = k;
    loop {
        let term = ln_term.exp();
        total += term;
        if i == n || (term < total * 1e-17 && i > k + 10) {
            break;
        }
        ln_term += ((n - i) as f64).ln() - ((i + 1) as f64).ln() + ratio;
        i += 1;
    }
    total.min(1.0)
}

/// The `q` quantile (linear interpolation, like numpy's default) of sorted values; `None` when empty.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let pos = q.clamp(0.0, 1.0) * last as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let a = *sorted.get(lo)?;
    let b = *sorted.get(hi)?;
    Some(a + (b - a) * (pos - lo as f64))
}

/// The empirical upper-tail probability of `value` among `sorted` calibration values, with add-one smoothing:
/// `(1 + #{c >= value}) / (1 + n)`. Never zero, so `-ln` of it is finite.
pub fn tail_probability(sorted: &[f64], value: f64) -> f64 {
    let below = sorted.partition_point(|&c| c < value);
    let at_or_above = sorted.len() - below;
    (1 + at_or_above) as f64 / (1 + sorted.len()) as f64
}

/// Smallest tail probability [`extrapolated_tail`] returns: caps one component's `-ln p` at about 27.6.
pub const MIN_TAIL: f64 = 1e-12;

/// The upper-tail probability of `value` among `sorted` calibration values, extrapolated beyond the largest one.
///
/// Up to the calibration maximum this is [`tail_probability`]. Beyond it the empirical estimate is stuck at
/// `1 / (n + 1)`, so the tail is modelled as exponential above the 90th percentile `q`: `P(X > v) = 0.1 ×
/// exp(-(v - q) / β)`, with `β` chosen so that the expected maximum of `n` draws is the observed one,
/// `β = (max - q) / ln(0.1 n)`. A component that never moved on clean data (`β = 0`) gives [`MIN_TAIL`] to any value
/// above it.
pub fn extrapolated_tail(sorted: &[f64], value: f64) -> f64 {
    let empirical = tail_probability(sorted, value);
    let (Some(&max), Some(q)) = (sorted.last(), quantile_sorted(sorted, 0.9)) else {
        return empirical;
    };
    if value.is_nan() {
        return MIN_TAIL;
    }
    if value <= max {
        return empirical;
    }
    let draws = 0.1 * sorted.len() as f64;
    let beta = if draws > 1.0 {
        (max - q) / draws.ln()
    } else {
        max - q
    };
    if beta <= 0.0 || !beta.is_finite() {
        return MIN_TAIL;
    }
    (0.1 * (-(value - q) / beta).exp()).clamp(MIN_TAIL, empirical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_functions_match_tables() {
        assert!((normal_sf(1.959_963_985) - 0.025).abs() < 1e-7);
        assert!((normal_ppf(0.975) - 1.959_963_985).abs() < 1e-5);
        assert!((normal_ppf(0.001) + 3.090_232_306).abs() < 1e-5);
    }

    #[test]
    fn binomial_tail_matches_scipy() {
        // scipy.stats.binom.sf(k - 1, n, p)
        assert!((binomial_sf(5, 10, 0.5) - 0.623_046_875).abs() < 1e-12);
        assert!((binomial_sf(30, 100, 0.1) / 2.445_112_239_390_972e-8 - 1.0).abs() < 1e-6);
        assert_eq!(binomial_sf(0, 10, 0.3), 1.0);
        assert_eq!(binomial_sf(11, 10, 0.3), 0.0);
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile_sorted(&v, 0.5), Some(2.5));
        assert_eq!(quantile_sorted(&v, 1.0), Some(4.0));
        assert_eq!(quantile_sorted(&[], 0.5), None);
        assert!((tail_probability(&v, 3.0) - 3.0 / 5.0).abs() < 1e-12);
    }

    #[test]
    fn extrapolated_tail_agrees_inside_and_decays_outside() {
        let sorted: Vec<f64> = (0..100).map(f64::from).collect();
        assert_eq!(
            extrapolated_tail(&sorted, 50.0),
            tail_probability(&sorted, 50.0)
        );
        assert_eq!(extrapolated_tail(&sorted, 99.0), 2.0 / 101.0);
        // q90 = 89.1, beta = 9.9 / ln 10: one beta past the maximum is e^-1 of 0.1 x e^-ln10.
        let beta = 9.9 / 10.0_f64.ln();
        let p = extrapolated_tail(&sorted, 99.0 + beta);
        assert!((p - 0.01 * (-1.0_f64).exp()).abs() < 1e-12, "{p}");
        assert!(extrapolated_tail(&sorted, 1e9) == MIN_TAIL);
        // A component that was zero on every clean row: anything above it is as unlikely as it gets.
        let zeros = vec![0.0; 50];
        assert_eq!(extrapolated_tail(&zeros, 0.0), 1.0);
        assert_eq!(extrapolated_tail(&zeros, 1e-6), MIN_TAIL);
        assert_eq!(extrapolated_tail(&zeros, f64::NAN), MIN_TAIL);
    }
}
