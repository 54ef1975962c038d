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

/// The standard normal quantile, by Wichura's algorithm AS 241 (PPND16: rational approximations in three ranges,
/// relative error about 1e-16). `-inf` at 0 and below, `+inf` at 1 and above. The Shapiro-Wilk weights take one per
/// pair of order statistics, so it must be cheap: a bisection on [`normal_sf`] made a test over 5,000 values cost
/// milliseconds.
#[allow(
    clippy::excessive_precision,
    reason = "AS 241's published coefficients, digit for digit"
)]
pub fn normal_ppf(p: f64) -> f64 {
    const A: [f64; 8] = [
        3.387_132_872_796_366_608,
        133.141_667_891_784_377_45,
        1_971.590_950_306_551_442_7,
        13_731.693_765_509_461_125,
        45_921.953_931_549_871_457,
        67_265.770_927_008_700_853,
        33_430.575_583_588_128_105,
        2_509.080_928_730_122_672_7,
    ];
    const B: [f64; 8] = [
        1.0,
        42.313_330_701_600_911_252,
        687.187_007_492_057_908_3,
        5_394.196_021_424_751_107_7,
        21_213.794_301_586_595_867,
        39_307.895_800_092_710_61,
        28_729.085_735_721_942_674,
        5_226.495_278_852_854_561,
    ];
    const C: [f64; 8] = [
        1.423_437_110_749_683_577_34,
        4.630_337_846_156_545_295_9,
        5.769_497_221_460_691_405_5,
        3.647_848_324_763_204_605_04,
        1.270_458_252_452_368_382_58,
        0.241_780_725_177_450_611_77,
        0.022_723_844_989_269_184_583_3,
        7.745_450_142_783_414_076_4e-4,
    ];
    const D: [f64; 8] = [
        1.0,
        2.053_191_626_637_758_821_87,
        1.676_384_830_183_803_849_4,
        0.689_767_334_985_100_004_55,
        0.148_103_976_427_480_074_59,
        0.015_198_666_563_616_457_196_6,
        5.475_938_084_995_344_946e-4,
        1.050_750_071_644_416_843_24e-9,
    ];
    const E: [f64; 8] = [
        6.657_904_643_501_103_777_2,
        5.463_784_911_164_114_369_9,
        1.784_826_539_917_291_335_8,
        0.296_560_571_828_504_891_23,
        0.026_532_189_526_576_123_093,
        1.242_660_947_388_078_438_6e-3,
        2.711_555_568_743_487_578_15e-5,
        2.010_334_399_292_288_132_65e-7,
    ];
    const F: [f64; 8] = [
        1.0,
        0.599_832_206_555_887_937_69,
        0.136_929_880_922_735_805_31,
        0.014_875_361_290_850_614_852_5,
        7.868_691_311_456_132_591e-4,
        1.846_318_317_510_054_681_8e-5,
        1.421_511_758_316_445_888_7e-7,
        2.044_263_103_389_939_785_64e-15,
    ];
    let ratio = |num: &[f64; 8], den: &[f64; 8], x: f64| {
        let horner = |c: &[f64; 8]| c.iter().rev().fold(0.0, |acc, &k| acc * x + k);
        horner(num) / horner(den)
    };
    if p.is_nan() {
        return f64::NAN;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        return q * ratio(&A, &B, 0.180_625 - q * q);
    }
    let r = (-(if q < 0.0 { p } else { 1.0 - p }).ln()).sqrt();
    let value = if r <= 5.0 {
        ratio(&C, &D, r - 1.6)
    } else {
        ratio(&E, &F, r - 5.0)
    };
    if q < 0.0 {
        -value
    } else {
        value
    }
}

/// `P(X >= k)` for `X ~ Binomial(n, p)`: the probability mass at the start by log-factorials, then the tail
/// term by term, multiplicatively, from the mode outwards (the upper tail when `k` is above the mode, else one minus
/// the lower tail), until the terms no longer count. The extraction monitor asks four of these on every query, with
/// `n` the principal's query count: summing every term in log space made a long-lived principal's query cost
/// milliseconds.
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
    let odds = p / (1.0 - p);
    let mode = ((n + 1) as f64 * p).floor() as u64;
    let mut total = 0.0_f64;
    if k > mode {
        // Terms fall from k upwards.
        let (mut i, mut term) = (k, ln_binomial_pmf(k, n, p).exp());
        loop {
            total += term;
            if i >= n || term <= total * 1e-17 {
                break;
            }
            term *= (n - i) as f64 / (i + 1) as f64 * odds;
            i += 1;
        }
        total.min(1.0)
    } else {
        // Terms fall from k - 1 downwards: P(X >= k) = 1 - P(X <= k - 1).
        let (mut i, mut term) = (k - 1, ln_binomial_pmf(k - 1, n, p).exp());
        loop {
            total += term;
            if i == 0 || term <= total * 1e-17 {
                break;
            }
            term *= i as f64 / (n - i + 1) as f64 / odds;
            i -= 1;
        }
        (1.0 - total).clamp(0.0, 1.0)
    }
}

/// Whether `P(X >= k) < alpha` for `X ~ Binomial(n, p)`, decided without summing the whole tail: the extraction
/// monitor's tests on every query. [`binomial_sf`] sums until the terms no longer count, about nine standard
/// deviations of terms (over a thousand for a principal of a million queries and a rate of a few percent, four
/// times a query). Here:
/// - a tail from at most `floor(np)` holds at least half the mass (the median is `floor(np)` or `ceil(np)`), so it
///   is not below any `alpha < 1/2`: no term is summed;
/// - above it, the terms fall from `k` on, each ratio smaller than the last: the sum stops as soon as it reaches
///   `alpha` (no), or when the rest, below a geometric series of the current ratio, cannot bring it there (yes).
pub fn binomial_sf_below(k: u64, n: u64, p: f64, alpha: f64) -> bool {
    if alpha >= 0.5 || k == 0 || k > n || p <= 0.0 || p >= 1.0 {
        return binomial_sf(k, n, p) < alpha;
    }
    if k as f64 <= (n as f64 * p).floor() {
        return false;
    }
    let odds = p / (1.0 - p);
    let mut term = ln_binomial_pmf(k, n, p).exp();
    let (mut i, mut total) = (k, 0.0_f64);
    loop {
        total += term;
        if total >= alpha {
            return false;
        }
        if i >= n {
            return true;
        }
        // Past the mean every ratio is below one and below the one before it.
        let ratio = (n - i) as f64 / (i + 1) as f64 * odds;
        if total + term * ratio / (1.0 - ratio) < alpha {
            return true;
        }
        term *= ratio;
        i += 1;
    }
}

/// `ln P(X = i)` for `X ~ Binomial(n, p)`, `i <= n`, `0 < p < 1`.
fn ln_binomial_pmf(i: u64, n: u64, p: f64) -> f64 {
    ln_factorial(n) - ln_factorial(i) - ln_factorial(n - i)
        + i as f64 * p.ln()
        + (n - i) as f64 * (-p).ln_1p()
}

/// `ln(n!)`: a sum of logs below 16, Stirling's series (to the `n^-7` term: error below 1e-16 relative) above.
fn ln_factorial(n: u64) -> f64 {
    if n < 16 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64;
    let (x2, x3) = (x * x, x * x * x);
    x * x.ln() - x + 0.5 * (std::f64::consts::TAU * x).ln() + 1.0 / (12.0 * x) - 1.0 / (360.0 * x3)
        + 1.0 / (1260.0 * x3 * x2)
        - 1.0 / (1680.0 * x3 * x2 * x2)
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
    fn the_tail_test_decides_as_the_whole_tail_does() {
        // Every k around and above the mean, for small and large n, rates from rare to common and the alphas the
        // monitor uses; a tail within a millionth of alpha is left out (the two sums round differently there).
        for &(n, p) in &[
            (1_u64, 0.3),
            (10, 0.5),
            (200, 0.01),
            (5_000, 0.02),
            (100_000, 0.003),
            (1_000_000, 0.02),
        ] {
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            let mean = n as f64 * p;
            let ks = (0..200).map(|j| (mean - 3.0 * sd + j as f64 * 0.06 * sd).max(0.0) as u64);
            for k in ks.chain([0, 1, n, n + 1]) {
                let sf = binomial_sf(k, n, p);
                for alpha in [1e-12, 1e-6, 1e-3, 0.05, 0.3] {
                    if (sf - alpha).abs() <= 1e-6 * alpha {
                        continue;
                    }
                    assert_eq!(
                        binomial_sf_below(k, n, p, alpha),
                        sf < alpha,
                        "k {k} n {n} p {p} alpha {alpha}: sf {sf}"
                    );
                }
            }
        }
    }

    #[test]
    fn normal_functions_match_tables() {
        assert!((normal_sf(1.959_963_985) - 0.025).abs() < 1e-7);
        assert!((normal_ppf(0.975) - 1.959_963_985).abs() < 1e-5);
        assert!((normal_ppf(0.001) + 3.090_232_306).abs() < 1e-5);
        // Each of AS 241's three ranges, against values from scipy.stats.norm.ppf.
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_963_984_540_054),
            (0.001, -3.090_232_306_167_813_6),
            (1e-10, -6.361_340_902_404_056),
            (1e-20, -9.262_340_089_798_409),
            (1.0 - 1e-12, 7.034_486_910_047_835_6),
        ] {
            assert!(
                (normal_ppf(p) - z).abs() < 1e-9 * (1.0 + z.abs()),
                "{p}: {}",
                normal_ppf(p)
            );
        }
        // The inverse of the upper tail, within the tail's own accuracy, across the range.
        for i in 1..1000 {
            let p = f64::from(i) / 1000.0;
            let back = 1.0 - normal_sf(normal_ppf(p));
            assert!((back - p).abs() < 1e-6, "{p} -> {back}");
        }
        assert_eq!(normal_ppf(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_ppf(1.0), f64::INFINITY);
    }

    #[test]
    fn binomial_tail_matches_scipy() {
        // scipy.stats.binom.sf(k - 1, n, p)
        assert!((binomial_sf(5, 10, 0.5) - 0.623_046_875).abs() < 1e-12);
        assert!((binomial_sf(30, 100, 0.1) / 2.445_112_239_390_972e-8 - 1.0).abs() < 1e-6);
        assert_eq!(binomial_sf(0, 10, 0.3), 1.0);
        assert_eq!(binomial_sf(11, 10, 0.3), 0.0);
        // Far in the upper tail, at the mean and far in the lower tail of a large n (scipy.stats.binom.sf(k - 1, n, p)).
        assert!((binomial_sf(200, 6000, 0.02) / 9.455_024_074_504_712e-12 - 1.0).abs() < 1e-8);
        assert!((binomial_sf(120, 6000, 0.02) - 0.512_508_211_851_349_8).abs() < 1e-10);
        assert!((binomial_sf(60, 6000, 0.02) - 0.999_999_999_634_594_5).abs() < 1e-12);
    }

    /// The sum of every term in log space, as the tail once was computed: the reference for the fast one.
    fn binomial_sf_every_term(k: u64, n: u64, p: f64) -> f64 {
        let mut ln_term = 0.0_f64;
        for j in 1..=k {
            ln_term += ((n - k + j) as f64).ln() - (j as f64).ln();
        }
        ln_term += k as f64 * p.ln() + (n - k) as f64 * (1.0 - p).ln();
        let ratio = (p / (1.0 - p)).ln();
        let mut total = 0.0_f64;
        for i in k..=n {
            total += ln_term.exp();
            if i < n {
                ln_term += ((n - i) as f64).ln() - ((i + 1) as f64).ln() + ratio;
            }
        }
        total.min(1.0)
    }

    #[test]
    fn binomial_tail_matches_the_sum_of_every_term() {
        for n in [1_u64, 2, 7, 15, 16, 17, 40, 300, 2_000] {
            for p in [0.001, 0.02, 0.1, 0.5, 0.9] {
                for k in 1..=n {
                    let (fast, slow) = (binomial_sf(k, n, p), binomial_sf_every_term(k, n, p));
                    let close = (fast - slow).abs() <= 1e-9 * slow.max(1e-300)
                        || (fast - slow).abs() < 1e-13;
                    assert!(close, "k {k} n {n} p {p}: {fast} against {slow}");
                }
            }
        }
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
