//! NPB CG: inverse power method with conjugate gradient on NPB's random sparse
//! matrix (`makea`), verified by its estimate `zeta` of the smallest eigenvalue.
//!
//! Matrix generation, the sparse-matrix assembly and every sparse
//! matrix-vector product are split by row ranges whose size depends only on the
//! class, so a step stays short and progress (steps done) means the same on
//! every ISA.

use crate::rand::{randlc, A};
use crate::{rel_err, verdict, Class};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use serde::{Deserialize, Serialize};
use tern_migration::{
    describe_typed, BulkRegion, LoadError, Progress, Restored, Snapshot, Step, Task, TaskKind,
    WriteError,
};

const NAME: &str = "npb-cg";
/// Version 2: steps of 2^14 nonzeros (version 1 took 2^18).
const VERSION: u32 = 2;
const CGITMAX: u32 = 25;
const RCOND: f64 = 0.1;
const EPSILON: f64 = 1.0e-10;
/// Nonzeros (or equivalent work) per step: a few milliseconds even on the
/// slowest node (the PC kernel computes floating point in software, where
/// 2^18 took about 300 ms under QEMU and held a migration to that pace).
const BUDGET: usize = 1 << 14;

/// Registry entry.
pub const KIND: TaskKind = TaskKind {
    name: NAME,
    version: VERSION,
    load,
    describe,
};

struct Params {
    n: usize,
    nonzer: usize,
    niter: u32,
    shift: f64,
    zeta_verify: f64,
}

fn params(class: Class) -> Params {
    let (n, nonzer, niter, shift, zeta_verify) = match class {
        Class::S => (1400, 7, 15, 10.0, 8.597_177_507_864_8),
        Class::W => (7000, 8, 15, 12.0, 10.362_595_087_124),
        Class::A => (14000, 11, 15, 20.0, 17.130_235_054_029),
        Class::B => (75000, 13, 75, 60.0, 22.712_745_482_631),
    };
    Params {
        n,
        nonzer,
        niter,
        shift,
        zeta_verify,
    }
}

/// Bytes of state a run of `class` allocates at its peak (before assembly
/// frees the row buffers).
pub(crate) fn state_bytes(class: Class) -> u64 {
    let p = params(class);
    let (n, w) = (p.n, p.w());
    // f64 + i32 per matrix entry and per row-buffer entry; five f64 vectors.
    (12 * p.nz_alloc() + 4 * (n + 1) + 8 * n + 12 * n * w + 40 * (n + 2)) as u64
}

impl Params {
    /// Entries reserved for the matrix before duplicates are merged (NPB's NZ).
    fn nz_alloc(&self) -> usize {
        self.n * (self.nonzer + 1) * (self.nonzer + 1)
    }
    /// Width of a generated row (NPB's NONZER + 1).
    fn w(&self) -> usize {
        self.nonzer + 1
    }
    /// Rows per step for row-linear phases (a row holds at most w² entries).
    fn rows(&self) -> usize {
        (BUDGET / (self.w() * self.w())).max(1)
    }
    /// Rows per step while assembling (each row costs up to w³).
    fn fill_rows(&self) -> usize {
        (BUDGET / (self.w() * self.w() * self.w())).max(1)
    }
    fn total_steps(&self) -> u64 {
        let r = self.n.div_ceil(self.rows());
        let per_iter = 1 + CGITMAX as usize * (r + 1) + r + 1;
        (3 * r + self.n.div_ceil(self.fill_rows()) + self.niter as usize * per_iter) as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    MakeRows(u64),
    SparseInit(u64),
    SparseFill(u64),
    Compact(u64),
    CgInit,
    Spmv { cgit: u32, row: u64 },
    Update { cgit: u32 },
    Residual(u64),
    Finish,
    Done,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    class: Class,
    phase: Phase,
    /// Generator state (NPB `tran`).
    tran: f64,
    /// Row scale while assembling (NPB `size` in `sparse`).
    size: f64,
    /// Outer iteration, 1-based.
    it: u32,
    rho: f64,
    rnorm: f64,
    zeta: f64,
    /// Nonzeros after assembly (0 before).
    nnz: u64,
    steps: u64,
}

/// A CG run.
pub struct Cg {
    s: State,
    p: Params,
    a: BulkRegion<f64>,
    colidx: BulkRegion<i32>,
    rowstr: BulkRegion<i32>,
    arow: BulkRegion<i32>,
    acol: BulkRegion<i32>,
    aelt: BulkRegion<f64>,
    nzloc: BulkRegion<i32>,
    x: BulkRegion<f64>,
    z: BulkRegion<f64>,
    pv: BulkRegion<f64>,
    q: BulkRegion<f64>,
    r: BulkRegion<f64>,
    /// Set when the data contradicts itself (only a crafted checkpoint can do
    /// that); the run then ends unverified instead of indexing out of bounds.
    broken: Option<&'static str>,
}

/// Sizes of the bulk regions in a given phase (the assembly work arrays are
/// dropped once the matrix is built).
struct Sizes {
    nz: usize,
    aux: usize,
}

fn sizes(p: &Params, s: &State) -> Sizes {
    let assembling = matches!(
        s.phase,
        Phase::MakeRows(_) | Phase::SparseInit(_) | Phase::SparseFill(_) | Phase::Compact(_)
    );
    if assembling {
        Sizes {
            nz: p.nz_alloc(),
            aux: p.n,
        }
    } else {
        Sizes {
            nz: s.nnz as usize,
            aux: 0,
        }
    }
}

/// Dot product in index order (NPB's serial summation order).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut s = 0.0;
    for (x, y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

/// `out[j] = Σ a[k]·v[colidx[k]]` for rows `rows`.
fn spmv(
    a: &[f64],
    colidx: &[i32],
    rowstr: &[i32],
    v: &[f64],
    out: &mut [f64],
    rows: core::ops::Range<usize>,
) {
    for j in rows {
        let mut sum = 0.0;
        for k in rowstr[j] as usize..rowstr[j + 1] as usize {
            sum += a[k] * v[colidx[k] as usize];
        }
        out[j] = sum;
    }
}

impl Cg {
    /// A fresh run of the given class.
    pub fn new(class: Class) -> Self {
        let p = params(class);
        let mut tran = 314_159_265.0;
        // NPB draws one number ("zeta = randlc(tran, amult)") before makea.
        randlc(&mut tran, A);
        let s = State {
            class,
            phase: Phase::MakeRows(0),
            tran,
            size: 1.0,
            it: 1,
            rho: 0.0,
            rnorm: 0.0,
            zeta: 0.0,
            nnz: 0,
            steps: 0,
        };
        let w = p.w();
        Self {
            a: BulkRegion::new(p.nz_alloc()),
            colidx: BulkRegion::new(p.nz_alloc()),
            rowstr: BulkRegion::new(p.n + 1),
            arow: BulkRegion::new(p.n),
            acol: BulkRegion::new(p.n * w),
            aelt: BulkRegion::new(p.n * w),
            nzloc: BulkRegion::new(p.n),
            x: BulkRegion::new(p.n + 2),
            z: BulkRegion::new(p.n + 2),
            pv: BulkRegion::new(p.n + 2),
            q: BulkRegion::new(p.n + 2),
            r: BulkRegion::new(p.n + 2),
            s,
            p,
            broken: None,
        }
    }

    /// NPB `sprnvc` + `vecset`: the sparse vector of row `iouter`.
    fn make_row(&mut self, iouter: usize, nn1: f64) {
        let (n, nz, w) = (self.p.n, self.p.nonzer, self.p.w());
        let mut v = [0.0f64; 32];
        let mut iv = [0usize; 32];
        let mut nzv = 0;
        while nzv < nz {
            let vecelt = randlc(&mut self.s.tran, A);
            let vecloc = randlc(&mut self.s.tran, A);
            let i = (nn1 * vecloc) as usize + 1;
            if i > n || iv[..nzv].contains(&i) {
                continue;
            }
            v[nzv] = vecelt;
            iv[nzv] = i;
            nzv += 1;
        }
        let diag = iouter + 1;
        let mut set = false;
        for k in 0..nzv {
            if iv[k] == diag {
                v[k] = 0.5;
                set = true;
            }
        }
        if !set {
            v[nzv] = 0.5;
            iv[nzv] = diag;
            nzv += 1;
        }
        self.arow.set(iouter, nzv as i32);
        let acol = self.acol.slice_mut(iouter * w..(iouter + 1) * w);
        for (c, i) in acol.iter_mut().zip(&iv[..nzv]) {
            *c = *i as i32 - 1;
        }
        let aelt = self.aelt.slice_mut(iouter * w..(iouter + 1) * w);
        aelt[..nzv].copy_from_slice(&v[..nzv]);
    }

    /// One row `i` of NPB `sparse`: add its outer product into the matrix rows.
    fn fill_row(&mut self, i: usize, ratio: f64) {
        let w = self.p.w();
        let cnt = self.arow.as_slice()[i] as usize;
        let acol = &self.acol.as_slice()[i * w..i * w + cnt];
        let aelt = &self.aelt.as_slice()[i * w..i * w + cnt];
        let rowstr = self.rowstr.as_slice();
        let a = self.a.all_mut();
        let colidx = self.colidx.all_mut();
        let nzloc = self.nzloc.all_mut();
        for nza in 0..cnt {
            let j = acol[nza] as usize;
            let scale = self.s.size * aelt[nza];
            for nzrow in 0..cnt {
                let jcol = acol[nzrow];
                let mut va = aelt[nzrow] * scale;
                if jcol as usize == j && j == i {
                    va = va + RCOND - self.p.shift;
                }
                let (lo, hi) = (rowstr[j] as usize, rowstr[j + 1] as usize);
                for k in lo..hi {
                    if colidx[k] > jcol {
                        // Insert in column order: shift the filled tail right.
                        for kk in (k..hi - 1).rev() {
                            if colidx[kk] > -1 {
                                a[kk + 1] = a[kk];
                                colidx[kk + 1] = colidx[kk];
                            }
                        }
                        colidx[k] = jcol;
                        a[k] = 0.0;
                        a[k] += va;
                        break;
                    } else if colidx[k] == -1 {
                        colidx[k] = jcol;
                        a[k] += va;
                        break;
                    } else if colidx[k] == jcol {
                        nzloc[j] += 1;
                        a[k] += va;
                        break;
                    }
                }
            }
        }
        self.s.size *= ratio;
    }

    fn run_phase(&mut self) {
        let n = self.p.n;
        let rows = self.p.rows();
        let span = |r0: u64, per: usize| (r0 as usize, (r0 as usize + per).min(n));
        match self.s.phase {
            Phase::MakeRows(r0) => {
                let (s, e) = span(r0, rows);
                let mut nn1 = 1usize;
                while nn1 < n {
                    nn1 *= 2;
                }
                for i in s..e {
                    self.make_row(i, nn1 as f64);
                }
                self.s.phase = if e == n {
                    // Count the triples of each row, then prefix sums.
                    let w = self.p.w();
                    let rowstr = self.rowstr.all_mut();
                    rowstr.iter_mut().for_each(|x| *x = 0);
                    for i in 0..n {
                        let cnt = self.arow.as_slice()[i];
                        for c in &self.acol.as_slice()[i * w..i * w + cnt as usize] {
                            rowstr[*c as usize + 1] += cnt;
                        }
                    }
                    for j in 1..=n {
                        rowstr[j] += rowstr[j - 1];
                    }
                    Phase::SparseInit(0)
                } else {
                    Phase::MakeRows(e as u64)
                };
            }
            Phase::SparseInit(r0) => {
                let (s, e) = span(r0, rows);
                let rowstr = self.rowstr.as_slice();
                let (lo, hi) = (rowstr[s] as usize, rowstr[e] as usize);
                self.a.slice_mut(lo..hi).iter_mut().for_each(|x| *x = 0.0);
                self.colidx
                    .slice_mut(lo..hi)
                    .iter_mut()
                    .for_each(|x| *x = -1);
                self.nzloc.slice_mut(s..e).iter_mut().for_each(|x| *x = 0);
                self.s.phase = if e == n {
                    self.s.size = 1.0;
                    Phase::SparseFill(0)
                } else {
                    Phase::SparseInit(e as u64)
                };
            }
            Phase::SparseFill(r0) => {
                let (s, e) = span(r0, self.p.fill_rows());
                let ratio = libm::pow(RCOND, 1.0 / n as f64);
                for i in s..e {
                    self.fill_row(i, ratio);
                }
                self.s.phase = if e == n {
                    let nzloc = self.nzloc.all_mut();
                    for j in 1..n {
                        nzloc[j] += nzloc[j - 1];
                    }
                    Phase::Compact(0)
                } else {
                    Phase::SparseFill(e as u64)
                };
            }
            Phase::Compact(r0) => {
                let (s, e) = span(r0, rows);
                let rowstr = self.rowstr.as_slice();
                let nzloc = self.nzloc.as_slice();
                let a = self.a.all_mut();
                let colidx = self.colidx.all_mut();
                for j in s..e {
                    let j1 = if j > 0 { rowstr[j] - nzloc[j - 1] } else { 0 };
                    let j2 = rowstr[j + 1] - nzloc[j];
                    let from = rowstr[j];
                    // Only a crafted checkpoint breaks 0 <= j1 <= from and j2 - j1 <= row length.
                    if j1 < 0 || j1 > from || j2 < j1 || from + (j2 - j1) > rowstr[j + 1] {
                        self.broken = Some("row counts out of range");
                        break;
                    }
                    let (j1, j2, from) = (j1 as usize, j2 as usize, from as usize);
                    for k in j1..j2 {
                        a[k] = a[from + k - j1];
                        colidx[k] = colidx[from + k - j1];
                    }
                }
                if e == n {
                    self.finish_assembly();
                } else {
                    self.s.phase = Phase::Compact(e as u64);
                }
            }
            Phase::CgInit => {
                let x = self.x.as_slice();
                self.q.all_mut().iter_mut().for_each(|v| *v = 0.0);
                self.z.all_mut().iter_mut().for_each(|v| *v = 0.0);
                self.r.all_mut()[..n + 1].copy_from_slice(&x[..n + 1]);
                self.pv.all_mut()[..n + 1].copy_from_slice(&x[..n + 1]);
                let r = &self.r.as_slice()[..n];
                self.s.rho = dot(r, r);
                self.s.phase = Phase::Spmv { cgit: 1, row: 0 };
            }
            Phase::Spmv { cgit, row } => {
                let (s, e) = span(row, rows);
                spmv(
                    self.a.as_slice(),
                    self.colidx.as_slice(),
                    self.rowstr.as_slice(),
                    self.pv.as_slice(),
                    self.q.all_mut(),
                    s..e,
                );
                self.s.phase = if e == n {
                    Phase::Update { cgit }
                } else {
                    Phase::Spmv {
                        cgit,
                        row: e as u64,
                    }
                };
            }
            Phase::Update { cgit } => {
                let rho0 = self.s.rho;
                let d = dot(&self.pv.as_slice()[..n], &self.q.as_slice()[..n]);
                let alpha = rho0 / d;
                let (p, q) = (self.pv.as_slice(), self.q.as_slice());
                let z = self.z.all_mut();
                let r = self.r.all_mut();
                let mut rho = 0.0;
                for j in 0..n {
                    z[j] += alpha * p[j];
                    r[j] -= alpha * q[j];
                    rho += r[j] * r[j];
                }
                let beta = rho / rho0;
                let r = self.r.as_slice();
                let p = self.pv.all_mut();
                for j in 0..n {
                    p[j] = r[j] + beta * p[j];
                }
                self.s.rho = rho;
                self.s.phase = if cgit < CGITMAX {
                    Phase::Spmv {
                        cgit: cgit + 1,
                        row: 0,
                    }
                } else {
                    Phase::Residual(0)
                };
            }
            Phase::Residual(r0) => {
                let (s, e) = span(r0, rows);
                spmv(
                    self.a.as_slice(),
                    self.colidx.as_slice(),
                    self.rowstr.as_slice(),
                    self.z.as_slice(),
                    self.r.all_mut(),
                    s..e,
                );
                self.s.phase = if e == n {
                    Phase::Finish
                } else {
                    Phase::Residual(e as u64)
                };
            }
            Phase::Finish => {
                let (x, r, z) = (self.x.as_slice(), self.r.as_slice(), self.z.as_slice());
                let mut sum = 0.0;
                for j in 0..n {
                    let d = x[j] - r[j];
                    sum += d * d;
                }
                self.s.rnorm = libm::sqrt(sum);
                let t1 = dot(&x[..n], &z[..n]);
                let t2 = 1.0 / libm::sqrt(dot(&z[..n], &z[..n]));
                self.s.zeta = self.p.shift + 1.0 / t1;
                let z = self.z.as_slice();
                for (xj, zj) in self.x.all_mut()[..n].iter_mut().zip(z) {
                    *xj = t2 * zj;
                }
                self.s.phase = if self.s.it == self.p.niter {
                    Phase::Done
                } else {
                    self.s.it += 1;
                    Phase::CgInit
                };
            }
            Phase::Done => return,
        }
        self.s.steps += 1;
    }

    /// Ends NPB `sparse`: final row pointers, shrink the matrix to its nonzeros,
    /// drop the work arrays, and set the start vector x = (1, …, 1).
    fn finish_assembly(&mut self) {
        let n = self.p.n;
        let nzloc = self.nzloc.as_slice();
        let rowstr = self.rowstr.all_mut();
        for j in 1..=n {
            rowstr[j] -= nzloc[j - 1];
        }
        let nnz = rowstr[n] as usize;
        self.s.nnz = nnz as u64;
        let mut a = core::mem::replace(&mut self.a, BulkRegion::new(0)).into_vec();
        a.truncate(nnz);
        self.a = BulkRegion::from_vec(a);
        let mut c = core::mem::replace(&mut self.colidx, BulkRegion::new(0)).into_vec();
        c.truncate(nnz);
        self.colidx = BulkRegion::from_vec(c);
        self.arow = BulkRegion::new(0);
        self.acol = BulkRegion::new(0);
        self.aelt = BulkRegion::new(0);
        self.nzloc = BulkRegion::new(0);
        self.x.all_mut()[..n + 1].iter_mut().for_each(|v| *v = 1.0);
        self.s.zeta = 0.0;
        self.s.phase = Phase::CgInit;
    }

    fn report(&self) -> (bool, String) {
        let err = rel_err(self.s.zeta, self.p.zeta_verify);
        let ok = err <= EPSILON;
        let out = format!(
            " CG Benchmark Completed.\n Class = {}\n Size = {}\n Iterations = {}\n Nonzeros = {}\n ||r|| = {:.15e}\n Zeta = {:.13e}\n Error = {:.3e}\n {}",
            self.s.class.letter(),
            self.p.n,
            self.p.niter,
            self.s.nnz,
            self.s.rnorm,
            self.s.zeta,
            err,
            verdict(ok)
        );
        (ok, out)
    }
}

impl Task for Cg {
    fn kind(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn step(&mut self) -> Step {
        self.run_phase();
        let done = self.s.phase == Phase::Done;
        crate::phased_step("CG", self.broken, done, || self.report())
    }
    fn progress(&self) -> Progress {
        Progress {
            done: self.s.steps,
            total: self.p.total_steps(),
        }
    }
    fn save<'a>(&'a self, snap: &mut Snapshot<'a>) -> Result<(), WriteError> {
        snap.typed("state", &self.s)?;
        snap.bulk("a", &self.a);
        snap.bulk("colidx", &self.colidx);
        snap.bulk("rowstr", &self.rowstr);
        snap.bulk("arow", &self.arow);
        snap.bulk("acol", &self.acol);
        snap.bulk("aelt", &self.aelt);
        snap.bulk("nzloc", &self.nzloc);
        snap.bulk("x", &self.x);
        snap.bulk("z", &self.z);
        snap.bulk("p", &self.pv);
        snap.bulk("q", &self.q);
        snap.bulk("r", &self.r);
        Ok(())
    }
    fn clear_dirty(&mut self) {
        for r in [
            &mut self.a,
            &mut self.aelt,
            &mut self.x,
            &mut self.z,
            &mut self.pv,
            &mut self.q,
            &mut self.r,
        ] {
            r.clear_dirty();
        }
        for r in [
            &mut self.colidx,
            &mut self.rowstr,
            &mut self.arow,
            &mut self.acol,
            &mut self.nzloc,
        ] {
            r.clear_dirty();
        }
    }
}

fn load(mut rs: Restored) -> Result<Box<dyn Task>, LoadError> {
    let s: State = rs.typed("state")?;
    let p = params(s.class);
    let n = p.n as u64;
    let pos_ok = match s.phase {
        Phase::MakeRows(r) | Phase::SparseInit(r) | Phase::SparseFill(r) | Phase::Compact(r) => {
            r < n
        }
        Phase::Spmv { cgit, row } => (1..=CGITMAX).contains(&cgit) && row < n,
        Phase::Update { cgit } => (1..=CGITMAX).contains(&cgit),
        Phase::Residual(r) => r < n,
        Phase::CgInit | Phase::Finish | Phase::Done => true,
    };
    if !pos_ok
        || !(1..=p.niter).contains(&s.it)
        || s.steps > p.total_steps()
        || s.nnz > p.nz_alloc() as u64
    {
        return Err(LoadError::Inconsistent("CG state out of range"));
    }
    let z = sizes(&p, &s);
    let w = p.w();
    let t = Cg {
        a: rs.take_bulk("a", z.nz)?,
        colidx: rs.take_bulk("colidx", z.nz)?,
        rowstr: rs.take_bulk("rowstr", p.n + 1)?,
        arow: rs.take_bulk("arow", z.aux)?,
        acol: rs.take_bulk("acol", z.aux * w)?,
        aelt: rs.take_bulk("aelt", z.aux * w)?,
        nzloc: rs.take_bulk("nzloc", z.aux)?,
        x: rs.take_bulk("x", p.n + 2)?,
        z: rs.take_bulk("z", p.n + 2)?,
        pv: rs.take_bulk("p", p.n + 2)?,
        q: rs.take_bulk("q", p.n + 2)?,
        r: rs.take_bulk("r", p.n + 2)?,
        s,
        p,
        broken: None,
    };
    // Every index the algorithm takes from the data must be in bounds.
    let nn = t.p.n as i32;
    let nz = z.nz as i32;
    let assembled = z.aux == 0;
    // Row pointers exist from the end of MakeRows on.
    let rowstr_ok = matches!(t.s.phase, Phase::MakeRows(_))
        || (t
            .rowstr
            .as_slice()
            .windows(2)
            .all(|w| 0 <= w[0] && w[0] <= w[1])
            && t.rowstr.as_slice()[t.p.n] <= nz);
    let colidx_ok = t
        .colidx
        .as_slice()
        .iter()
        .all(|c| (if assembled { 0 } else { -1 }) <= *c && *c < nn);
    let arow_ok = t
        .arow
        .as_slice()
        .iter()
        .all(|c| 0 <= *c && *c as usize <= w);
    let acol_ok = t.acol.as_slice().iter().all(|c| 0 <= *c && *c < nn);
    let nzloc_ok = t.nzloc.as_slice().iter().all(|c| 0 <= *c && *c <= nz);
    if !(rowstr_ok && colidx_ok && arow_ok && acol_ok && nzloc_ok) {
        return Err(LoadError::Inconsistent("CG data out of range"));
    }
    Ok(Box::new(t))
}

fn describe(region: &str, bytes: &[u8]) -> Option<String> {
    (region == "state").then(|| describe_typed::<State>(bytes))
}
