//! The Shapiro–Wilk test of normality, by Royston's algorithm (AS R94, 1995), as `scipy.stats.shapiro` computes it.

/// The statistic `W` and its p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapiroWilk {
    /// The statistic: near 1 for normal samples.
    pub w: f64,
    /// The probability of a `W` this small under normality.
    pub p_value: f64,
}

fn poly(coefficients: &[f64], x: f64) -> f64 {
    coefficients.iter().rev().fold(0.0, |acc, &c| acc * x + c)
}

/// Tests `sample` for normality. `None` when there are fewer than 3 values, more than 5,000 (the approximation's
/// range), a non-finite value, or all values are equal.
pub fn shapiro_wilk(sample: &[f64]) -> Option<ShapiroWilk> {
    let n = sample.len();
    if !(3..=5000).contains(&n) || sample.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut x = sample.to_vec();
    // Unstable is the same order: under `total_cmp` only values equal to the bit compare equal.
    x.sort_unstable_by(f64::total_cmp);
    let range = x.last()? - x.first()?;
    if range < 1e-19 {
        return None;
    }
    let an = n as f64;
    let a = coefficients(n)?;
    // W = (sum a_i (x_(n+1-i) - x_(i)))^2 / sum (x - mean)^2, on values scaled by the range.
    let scaled: Vec<f64> = x.iter().map(|v| v / range).collect();
    let mean = scaled.iter().sum::<f64>() / an;
    let ssq: f64 = scaled.iter().map(|v| (v - mean) * (v - mean)).sum();
    let b: f64 = a
        .iter()
        .enumerate()
        .map(|(i, ai)| {
            let hi = scaled.get(n - 1 - i).copied().unwrap_or(0.0);
            let lo = scaled.get(i).copied().unwrap_or(0.0);
            ai * (hi - lo)
        })
        .sum();
    let w = (b * b / ssq).min(1.0);
    let p_value = p_value(w, n);
    Some(ShapiroWilk { w, p_value })
}

/// Royston's coefficients `a` for samples of `n` (`3..=5000`) values: they depend on `n` alone, and a monitor tests
/// samples of one size again and again (PRADA's window, once full), so each thread keeps the last size's.
fn coefficients(n: usize) -> Option<std::rc::Rc<[f64]>> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(usize, std::rc::Rc<[f64]>)>> = const { std::cell::RefCell::new(None) };
    }
    if let Some(a) = LAST.with_borrow(|last| {
        last.as_ref()
            .filter(|(m, _)| *m == n)
            .map(|(_, a)| a.clone())
    }) {
        return Some(a);
    }
    let an = n as f64;
    let half = n / 2;
    let mut a = vec![0.0_f64; half];
    if n == 3 {
        *a.first_mut()? = std::f64::consts::FRAC_1_SQRT_2;
    } else {
        const C1: [f64; 6] = [0.0, 0.221_157, -0.147_981, -2.071_19, 4.434_685, -2.706_056];
        const C2: [f64; 6] = [
            0.0, 0.042_981, -0.293_762, -1.752_461, 5.682_633, -3.582_633,
        ];
        let an25 = an + 0.25;
        let m: Vec<f64> = (1..=half)
            .map(|i| crate::stats::normal_ppf((i as f64 - 0.375) / an25))
            .collect();
        let summ2 = 2.0 * m.iter().map(|v| v * v).sum::<f64>();
        let ssumm2 = summ2.sqrt();
        let rsn = 1.0 / an.sqrt();
        let m0 = *m.first()?;
        let a1 = poly(&C1, rsn) - m0 / ssumm2;
        let (first_free, fac) = if n > 5 {
            let m1 = *m.get(1)?;
            let a2 = -m1 / ssumm2 + poly(&C2, rsn);
            *a.get_mut(1)? = a2;
            let fac = ((summ2 - 2.0 * m0 * m0 - 2.0 * m1 * m1)
                / (1.0 - 2.0 * a1 * a1 - 2.0 * a2 * a2))
                .sqrt();
            (2, fac)
        } else {
            (1, ((summ2 - 2.0 * m0 * m0) / (1.0 - 2.0 * a1 * a1)).sqrt())
        };
        *a.first_mut()? = a1;
        for (ai, mi) in a.iter_mut().zip(&m).skip(first_free) {
            *ai = -mi / fac;
        }
    }
    let a: std::rc::Rc<[f64]> = a.into();
    LAST.set(Some((n, a.clone())));
    Some(a)
}

fn p_value(w: f64, n: usize) -> f64 {
    let an = n as f64;
    if n == 3 {
        let pi6 = 6.0 / std::f64::consts::PI;
        return (pi6 * (w.sqrt().asin() - std::f64::consts::FRAC_PI_3)).max(0.0);
    }
    let w1 = 1.0 - w;
    if w1 <= 0.0 {
        return 1.0;
    }
    let mut y = w1.ln();
    let (m, s) = if n <= 11 {
        let gamma = poly(&[-2.273, 0.459], an);
        if y >= gamma {
            return 1e-99;
        }
        y = -(gamma - y).ln();
        (
            poly(&[0.544, -0.399_78, 0.025_054, -6.714e-4], an),
            poly(&[1.3822, -0.778_57, 0.062_767, -0.002_032_2], an).exp(),
        )
    } else {
        let xx = an.ln();
        (
            poly(&[-1.5861, -0.310_82, -0.083_751, 0.003_891_5], xx),
            poly(&[-0.4803, -0.082_676, 0.003_030_2], xx).exp(),
        )
    };
    crate::stats::normal_sf((y - m) / s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sample: &[f64], w: f64, p: f64) {
        let got = shapiro_wilk(sample).unwrap();
        assert!((got.w - w).abs() < 2e-5, "W {} != scipy {w}", got.w);
        assert!(
            (got.p_value - p).abs() < 2e-5 + 1e-3 * p,
            "p {} != scipy {p}",
            got.p_value
        );
    }

    // Expected values from scipy.stats.shapiro (scipy 1.x, Royston's swilk).
    #[test]
    fn matches_scipy_on_small_and_large_samples() {
        include!("shapiro_cases.rs");
    }

    #[test]
    fn a_size_tested_again_weighs_as_the_first_time() {
        let sample = |n: usize| -> Vec<f64> { (0..n).map(|i| ((i * 37) % 101) as f64).collect() };
        let first: Vec<_> = [5000, 5000, 40, 5000, 3, 40]
            .map(|n| shapiro_wilk(&sample(n)))
            .into();
        // A fresh thread has no coefficients kept: each size computed anew.
        let fresh: Vec<_> =
            std::thread::spawn(move || [5000, 40, 3].map(|n| shapiro_wilk(&sample(n))))
                .join()
                .unwrap()
                .into();
        assert_eq!(first.first(), fresh.first());
        assert_eq!(first.get(1), fresh.first());
        assert_eq!(first.get(3), fresh.first());
        assert_eq!(first.get(2), fresh.get(1));
        assert_eq!(first.get(5), fresh.get(1));
        assert_eq!(first.get(4), fresh.get(2));
    }

    #[test]
    fn refuses_what_it_cannot_test() {
        assert!(shapiro_wilk(&[1.0, 2.0]).is_none());
        assert!(shapiro_wilk(&[3.0; 10]).is_none());
        assert!(shapiro_wilk(&[1.0, f64::NAN, 2.0]).is_none());
    }
}
