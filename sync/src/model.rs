//! Linear time-series models: AR(p) by Yule–Walker (Levinson–Durbin), ARMA(p, q) by
//! Hannan–Rissanen least squares, orders chosen by AIC.
//!
//! These are the models BP-ACM (paper §2.1) fits per wavelet component; the paper fits
//! ARMA by least squares with the order chosen by AIC, which is what
//! [`ArmaModel::fit_aic`] does.

use alloc::vec;
use alloc::vec::Vec;

/// A fitted zero-mean ARMA model around `mean`:
/// `y_t = Σ ar[i]·y_{t-1-i} + e_t + Σ ma[j]·e_{t-1-j}`, with `y = x − mean`.
#[derive(Clone, Debug, PartialEq)]
pub struct ArmaModel {
    /// Sample mean removed before fitting.
    pub mean: f64,
    /// Autoregressive coefficients φ₁…φ_p.
    pub ar: Vec<f64>,
    /// Moving-average coefficients θ₁…θ_q.
    pub ma: Vec<f64>,
    /// Innovation variance estimate.
    pub sigma2: f64,
    /// Akaike information criterion of the chosen order (n·ln σ² + 2k).
    pub aic: f64,
}

/// Smallest variance we take the log of, relative to the series variance, so a perfect
/// fit does not give AIC = −∞ and win by accident.
const VAR_FLOOR: f64 = 1e-12;

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Biased sample autocovariances r₀…r_maxlag of `x` around `m` (the Yule–Walker choice,
/// which guarantees a stationary AR fit).
pub fn autocovariance(x: &[f64], m: f64, maxlag: usize) -> Vec<f64> {
    let n = x.len();
    (0..=maxlag)
        .map(|k| {
            if k >= n {
                return 0.0;
            }
            let s: f64 = (k..n).map(|t| (x[t] - m) * (x[t - k] - m)).sum();
            s / n as f64
        })
        .collect()
}

/// Levinson–Durbin recursion on autocovariances `r`: for every order 0..=p returns the
/// AR coefficients and innovation variance. Stops early if the variance vanishes.
pub fn levinson_durbin(r: &[f64], p: usize) -> Vec<(Vec<f64>, f64)> {
    let mut out = Vec::with_capacity(p + 1);
    let mut phi: Vec<f64> = Vec::new();
    let mut v = r.first().copied().unwrap_or(0.0);
    out.push((phi.clone(), v));
    for k in 1..=p.min(r.len().saturating_sub(1)) {
        if v <= 0.0 {
            break;
        }
        let acc: f64 = r[k] - (0..k - 1).map(|j| phi[j] * r[k - 1 - j]).sum::<f64>();
        let kappa = acc / v;
        let mut next = vec![0.0; k];
        for j in 0..k - 1 {
            next[j] = phi[j] - kappa * phi[k - 2 - j];
        }
        next[k - 1] = kappa;
        phi = next;
        v *= 1.0 - kappa * kappa;
        out.push((phi.clone(), v));
    }
    out
}

/// Solves `a·x = b` (a is n×n row-major) by Gaussian elimination with partial pivoting.
/// Returns `None` when the system is singular.
pub fn solve(mut a: Vec<f64>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| libm::fabs(a[i * n + col]).total_cmp(&libm::fabs(a[j * n + col])))?;
        if libm::fabs(a[piv * n + col]) < 1e-300 {
            return None;
        }
        if piv != col {
            for k in 0..n {
                a.swap(col * n + k, piv * n + k);
            }
            b.swap(col, piv);
        }
        for row in col + 1..n {
            let f = a[row * n + col] / a[col * n + col];
            for k in col..n {
                a[row * n + k] -= f * a[col * n + k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row * n + k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row * n + row];
    }
    Some(x)
}

/// True when the AR polynomial `1 − Σ a[i]·z^{i+1}` has all roots outside the unit
/// circle (a stationary AR, or, with `a = −θ`, an invertible MA). Uses the step-down
/// (inverse Levinson) recursion: stable iff every partial autocorrelation has |κ| < 1.
pub fn is_stable(a: &[f64]) -> bool {
    let mut a = a.to_vec();
    while let Some(&kappa) = a.last() {
        if kappa.is_nan() || libm::fabs(kappa) >= 1.0 {
            return false;
        }
        let k = a.len();
        let d = 1.0 - kappa * kappa;
        a = (0..k - 1)
            .map(|j| (a[j] + kappa * a[k - 2 - j]) / d)
            .collect();
    }
    true
}

fn aic(n: usize, sigma2: f64, var: f64, k: usize) -> f64 {
    let floor = (var * VAR_FLOOR).max(f64::MIN_POSITIVE);
    n as f64 * libm::log(sigma2.max(floor)) + 2.0 * k as f64
}

impl ArmaModel {
    /// A model that forecasts the mean: the right answer for a constant series.
    fn constant(mean: f64) -> Self {
        ArmaModel {
            mean,
            ar: Vec::new(),
            ma: Vec::new(),
            sigma2: 0.0,
            aic: f64::NEG_INFINITY,
        }
    }

    /// AR(p) by Yule–Walker with p ≤ `max_p` chosen by AIC. `None` for fewer than 3
    /// samples.
    pub fn fit_ar_aic(x: &[f64], max_p: usize) -> Option<Self> {
        let n = x.len();
        if n < 3 {
            return None;
        }
        let m = mean(x);
        let max_p = max_p.min(n / 3);
        let r = autocovariance(x, m, max_p);
        if r[0] <= 0.0 {
            return Some(Self::constant(m));
        }
        let fits = levinson_durbin(&r, max_p);
        let (phi, v, a) = fits
            .into_iter()
            .map(|(phi, v)| {
                let a = aic(n, v, r[0], phi.len());
                (phi, v, a)
            })
            .min_by(|a, b| a.2.total_cmp(&b.2))?;
        Some(ArmaModel {
            mean: m,
            ar: phi,
            ma: Vec::new(),
            sigma2: v,
            aic: a,
        })
    }

    /// ARMA(p, q), p ≤ `max_p`, q ≤ `max_q`, by Hannan–Rissanen: a long AR fit gives
    /// innovation estimates, then every (p, q) is a least-squares regression on lagged
    /// values and lagged innovations over the same sample, and AIC picks the order.
    pub fn fit_aic(x: &[f64], max_p: usize, max_q: usize) -> Option<Self> {
        let n = x.len();
        if n < 3 {
            return None;
        }
        let m = mean(x);
        let long = (max_p + max_q + 2).min(n / 4);
        if max_q == 0 || long < 2 {
            return Self::fit_ar_aic(x, max_p);
        }
        let r = autocovariance(x, m, long);
        if r[0] <= 0.0 {
            return Some(Self::constant(m));
        }
        let (phi_long, _) = levinson_durbin(&r, long).pop()?;
        let y: Vec<f64> = x.iter().map(|v| v - m).collect();
        let mut e = vec![0.0; n];
        for t in phi_long.len()..n {
            let pred: f64 = phi_long
                .iter()
                .enumerate()
                .map(|(i, c)| c * y[t - 1 - i])
                .sum();
            e[t] = y[t] - pred;
        }
        let start = phi_long.len() + max_p.max(max_q);
        if start + 4 > n {
            return Self::fit_ar_aic(x, max_p);
        }
        let rows = n - start;
        let mut best: Option<ArmaModel> = None;
        for p in 0..=max_p {
            for q in 0..=max_q {
                let k = p + q;
                let regressor = |t: usize, i: usize| {
                    if i < p {
                        y[t - 1 - i]
                    } else {
                        e[t - 1 - (i - p)]
                    }
                };
                let coef = if k == 0 {
                    Vec::new()
                } else {
                    let mut ata = vec![0.0; k * k];
                    let mut atb = vec![0.0; k];
                    for (t, &yt) in y.iter().enumerate().skip(start) {
                        for i in 0..k {
                            let ri = regressor(t, i);
                            atb[i] += ri * yt;
                            for j in 0..k {
                                ata[i * k + j] += ri * regressor(t, j);
                            }
                        }
                    }
                    match solve(ata, atb) {
                        Some(c) => c,
                        None => continue,
                    }
                };
                // A non-stationary AR part explodes in forecasts and a non-invertible MA
                // part makes the innovation filter diverge; neither is a usable model.
                let neg_ma: Vec<f64> = coef[p..].iter().map(|t| -t).collect();
                if !is_stable(&coef[..p]) || !is_stable(&neg_ma) {
                    continue;
                }
                let rss: f64 = (start..n)
                    .map(|t| {
                        let fit: f64 = (0..k).map(|i| coef[i] * regressor(t, i)).sum();
                        (y[t] - fit) * (y[t] - fit)
                    })
                    .sum();
                let sigma2 = rss / rows as f64;
                let a = aic(rows, sigma2, r[0], k);
                if best.as_ref().is_none_or(|b| a < b.aic) {
                    best = Some(ArmaModel {
                        mean: m,
                        ar: coef[..p].to_vec(),
                        ma: coef[p..].to_vec(),
                        sigma2,
                        aic: a,
                    });
                }
            }
        }
        best.or_else(|| Self::fit_ar_aic(x, max_p))
    }

    /// Forecasts the mean of the next `h` values after the series `x` (the data the
    /// model was fitted on, or its continuation). Innovations are filtered through `x`
    /// and future innovations are zero. Returns `None` for `h == 0` or an empty series.
    pub fn forecast_mean(&self, x: &[f64], h: usize) -> Option<f64> {
        if h == 0 || x.is_empty() {
            return None;
        }
        let p = self.ar.len();
        let q = self.ma.len();
        let mut y: Vec<f64> = x.iter().map(|v| v - self.mean).collect();
        let mut e = vec![0.0; y.len()];
        for t in 0..y.len() {
            let mut pred = 0.0;
            for (i, c) in self.ar.iter().enumerate() {
                if t > i {
                    pred += c * y[t - 1 - i];
                }
            }
            for (j, c) in self.ma.iter().enumerate() {
                if t > j {
                    pred += c * e[t - 1 - j];
                }
            }
            e[t] = if t >= p.max(q) { y[t] - pred } else { 0.0 };
        }
        let mut sum = 0.0;
        for _ in 0..h {
            let t = y.len();
            let mut f = 0.0;
            for (i, c) in self.ar.iter().enumerate() {
                if t > i {
                    f += c * y[t - 1 - i];
                }
            }
            for (j, c) in self.ma.iter().enumerate() {
                if t > j {
                    f += c * e[t - 1 - j];
                }
            }
            y.push(f);
            e.push(0.0);
            sum += f;
        }
        let out = self.mean + sum / h as f64;
        out.is_finite().then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic xorshift noise in [-0.5, 0.5) for synthetic series.
    pub(crate) fn noise(state: &mut u64) -> f64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    #[test]
    fn ar1_coefficient_is_recovered() {
        let mut s = 0x9E37_79B9_7F4A_7C15;
        let mut x = vec![0.0];
        for t in 1..4000 {
            let prev: f64 = x[t - 1];
            x.push(0.7 * prev + noise(&mut s));
        }
        let m = ArmaModel::fit_ar_aic(&x, 6).unwrap();
        assert!(!m.ar.is_empty());
        assert!((m.ar[0] - 0.7).abs() < 0.05, "phi = {:?}", m.ar);
        // Higher lags of a true AR(1) are near zero.
        for c in m.ar.iter().skip(1) {
            assert!(c.abs() < 0.1, "phi = {:?}", m.ar);
        }
    }

    #[test]
    fn ma1_is_found_by_hannan_rissanen() {
        let mut s = 12345;
        let e: Vec<f64> = (0..5000).map(|_| noise(&mut s)).collect();
        let x: Vec<f64> = (1..e.len()).map(|t| e[t] + 0.6 * e[t - 1]).collect();
        let m = ArmaModel::fit_aic(&x, 2, 2).unwrap();
        // An MA(1) with θ = 0.6 has ρ₁ = 0.6/1.36 ≈ 0.44; whatever order AIC picks, the
        // one-step forecast must use that dependence, so check the implied ρ₁.
        let r = autocovariance(&x, m.mean, 1);
        assert!((r[1] / r[0] - 0.6 / 1.36).abs() < 0.05);
        assert!(
            m.ma.first().is_some_and(|t| (t - 0.6).abs() < 0.15),
            "{m:?}"
        );
    }

    #[test]
    fn constant_series_forecasts_exactly() {
        let x = vec![3.5; 50];
        for m in [
            ArmaModel::fit_ar_aic(&x, 4).unwrap(),
            ArmaModel::fit_aic(&x, 2, 2).unwrap(),
        ] {
            assert_eq!(m.forecast_mean(&x, 5), Some(3.5));
        }
    }

    #[test]
    fn stability_check_matches_known_polynomials() {
        assert!(is_stable(&[]));
        assert!(is_stable(&[0.9]));
        assert!(!is_stable(&[1.0]));
        assert!(!is_stable(&[-1.2]));
        // φ = (0.5, 0.3): roots of 1 − 0.5z − 0.3z² are 1.17 and −2.84: stationary.
        assert!(is_stable(&[0.5, 0.3]));
        // φ = (0.5, 0.6): 1 − 0.5 − 0.6 < 0 at z = 1, a root inside the unit circle.
        assert!(!is_stable(&[0.5, 0.6]));
    }

    #[test]
    fn solve_rejects_singular_and_solves_regular() {
        assert!(solve(vec![1.0, 2.0, 2.0, 4.0], vec![1.0, 2.0]).is_none());
        let x = solve(vec![2.0, 1.0, 1.0, 3.0], vec![3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
    }

    #[test]
    fn levinson_matches_hand_computed_ar1() {
        // r = (1, 0.5, 0.25) is the autocovariance of AR(1) with φ = 0.5, σ² = 0.75.
        let fits = levinson_durbin(&[1.0, 0.5, 0.25], 2);
        assert_eq!(fits[1].0, vec![0.5]);
        assert!((fits[1].1 - 0.75).abs() < 1e-12);
        assert!(fits[2].0[1].abs() < 1e-12);
    }
}
