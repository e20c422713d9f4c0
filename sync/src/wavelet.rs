//! The 3-level Haar wavelet decomposition BP-ACM uses to split a bandwidth series into
//! one approximation and three detail components.
//!
//! BP-ACM (paper §2.1.1) names Mallat's decimated algorithm. Decimation makes the
//! coefficients at the end of the window depend on samples that have not arrived yet
//! and shifts with the window, so a forecaster cannot use it as printed. We use the
//! same Haar filter bank in its undecimated, causal ("à trous") form: every level
//! keeps one coefficient per sample, each coefficient uses only past samples, and the
//! reconstruction is the plain sum `x = c₃ + d₁ + d₂ + d₃`, so forecasting each
//! component and adding the forecasts is exact in the reconstruction step.

use alloc::vec::Vec;

/// Number of decomposition levels (the paper's choice).
pub const LEVELS: usize = 3;

/// A causal 3-level Haar decomposition of a series.
#[derive(Clone, Debug, PartialEq)]
pub struct Decomposition {
    /// Smooth approximation at level 3 (c₃).
    pub approximation: Vec<f64>,
    /// Detail components d₁ (finest) … d₃ (coarsest).
    pub details: [Vec<f64>; LEVELS],
}

/// Decomposes `x`: `c_j[t] = (c_{j-1}[t] + c_{j-1}[t − 2^{j−1}]) / 2` (the lagged term
/// is clamped to the first sample at the start) and `d_j = c_{j−1} − c_j`.
pub fn decompose(x: &[f64]) -> Decomposition {
    let mut c = x.to_vec();
    let mut details: [Vec<f64>; LEVELS] = [Vec::new(), Vec::new(), Vec::new()];
    for (j, detail) in details.iter_mut().enumerate() {
        let lag = 1usize << j;
        let next: Vec<f64> = (0..c.len())
            .map(|t| (c[t] + c[t.saturating_sub(lag)]) / 2.0)
            .collect();
        *detail = c.iter().zip(&next).map(|(a, b)| a - b).collect();
        c = next;
    }
    Decomposition {
        approximation: c,
        details,
    }
}

impl Decomposition {
    /// Sums the components back into the series.
    pub fn reconstruct(&self) -> Vec<f64> {
        (0..self.approximation.len())
            .map(|t| self.approximation[t] + self.details.iter().map(|d| d[t]).sum::<f64>())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconstruction_is_exact() {
        let x: Vec<f64> = (0..40)
            .map(|t| libm::sin(t as f64 * 0.3) + t as f64)
            .collect();
        let d = decompose(&x);
        for (a, b) in d.reconstruct().iter().zip(&x) {
            assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn constant_series_has_zero_details() {
        let d = decompose(&[2.0; 16]);
        assert!(d.details.iter().flatten().all(|v| *v == 0.0));
        assert!(d.approximation.iter().all(|v| *v == 2.0));
    }

    #[test]
    fn decomposition_is_causal() {
        // Appending a sample must not change any earlier coefficient.
        let x: Vec<f64> = (0..20).map(|t| (t * t % 7) as f64).collect();
        let a = decompose(&x[..19]);
        let b = decompose(&x);
        assert_eq!(a.approximation[..], b.approximation[..19]);
        for j in 0..LEVELS {
            assert_eq!(a.details[j][..], b.details[j][..19]);
        }
    }
}
