//! NPB's portable linear congruential generator (x ← a·x mod 2^46, in doubles).

const R23: f64 = 1.0 / 8_388_608.0; // 2^-23
const T23: f64 = 8_388_608.0; // 2^23
const R46: f64 = R23 * R23;
const T46: f64 = T23 * T23;

/// NPB's multiplier 5^13.
pub const A: f64 = 1_220_703_125.0;

/// Truncation toward zero, as NPB's `int()`/`aint()` (operands are below 2^46).
fn trunc(x: f64) -> f64 {
    x as i64 as f64
}

/// Advances `x` and returns the next uniform number in (0, 1) (NPB `randlc`).
pub fn randlc(x: &mut f64, a: f64) -> f64 {
    let t1 = R23 * a;
    let a1 = trunc(t1);
    let a2 = a - T23 * a1;
    let t1 = R23 * *x;
    let x1 = trunc(t1);
    let x2 = *x - T23 * x1;
    let t1 = a1 * x2 + a2 * x1;
    let t2 = trunc(R23 * t1);
    let z = t1 - T23 * t2;
    let t3 = T23 * z + a2 * x2;
    let t4 = trunc(R46 * t3);
    *x = t3 - T46 * t4;
    R46 * *x
}

/// Fills `out` with successive numbers (NPB `vranlc`).
pub fn vranlc(x: &mut f64, a: f64, out: &mut [f64]) {
    for y in out {
        *y = randlc(x, a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_exact_integer_recurrence() {
        let mut x = 314_159_265.0;
        let mut xi: u64 = 314_159_265;
        for _ in 0..1000 {
            let r = randlc(&mut x, A);
            xi = ((xi as u128 * 1_220_703_125u128) % (1u128 << 46)) as u64;
            assert_eq!(x, xi as f64);
            assert_eq!(r, xi as f64 / (1u64 << 46) as f64);
        }
    }
}
