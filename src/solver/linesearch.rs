//! More-Thuente line search (More & Thuente 1994, the MINPACK-2 `dcsrch`/`dcstep` algorithm)
//! as a scalar state machine: the caller evaluates phi(stp) = f(x + stp d) and
//! phi'(stp) = grad f(x + stp d) . d, and feeds them back. It seeks a step satisfying the
//! strong Wolfe conditions `phi(stp) <= phi(0) + ftol stp phi'(0)`,
//! `|phi'(stp)| <= gtol |phi'(0)|`, using safeguarded cubic and quadratic interpolation.
//! Nothing here allocates.

/// What the search asks for next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Evaluate phi and phi' at this step.
    Evaluate(f64),
    /// The strong Wolfe conditions hold at this step.
    Converged(f64),
    /// The search stopped without meeting them (reason); the last evaluated step is returned.
    Stopped(f64, &'static str),
}

/// Parameters (defaults as in MINPACK-2 / L-BFGS-B).
#[derive(Debug, Clone, Copy)]
pub struct MoreThuenteParams {
    /// Sufficient-decrease constant.
    pub ftol: f64,
    /// Curvature constant.
    pub gtol: f64,
    /// Relative width tolerance of the bracket.
    pub xtol: f64,
    /// Smallest step.
    pub stpmin: f64,
    /// Largest step.
    pub stpmax: f64,
}

impl Default for MoreThuenteParams {
    fn default() -> Self {
        MoreThuenteParams { ftol: 1e-4, gtol: 0.9, xtol: 1e-1, stpmin: 0.0, stpmax: 1e20 }
    }
}

/// State of one line search.
#[derive(Debug, Clone)]
pub struct MoreThuente {
    p: MoreThuenteParams,
    brackt: bool,
    stage: u8,
    finit: f64,
    ginit: f64,
    gtest: f64,
    width: f64,
    width1: f64,
    stx: f64,
    fx: f64,
    gx: f64,
    sty: f64,
    fy: f64,
    gy: f64,
    stmin: f64,
    stmax: f64,
    stp: f64,
}

const XTRAPL: f64 = 1.1;
const XTRAPU: f64 = 4.0;

impl MoreThuente {
    /// Starts a search from phi(0) = `f0`, phi'(0) = `g0` < 0 with first trial step `stp`.
    pub fn start(p: MoreThuenteParams, f0: f64, g0: f64, stp: f64) -> (Self, Action) {
        let s = MoreThuente {
            p,
            brackt: false,
            stage: 1,
            finit: f0,
            ginit: g0,
            gtest: p.ftol * g0,
            width: p.stpmax - p.stpmin,
            width1: 2.0 * (p.stpmax - p.stpmin),
            stx: 0.0,
            fx: f0,
            gx: g0,
            sty: 0.0,
            fy: f0,
            gy: g0,
            stmin: 0.0,
            stmax: stp + XTRAPU * stp,
            stp,
        };
        (s, Action::Evaluate(stp))
    }

    /// Feeds phi(stp) and phi'(stp) at the step last asked for; returns the next action.
    pub fn next(&mut self, f: f64, g: f64) -> Action {
        let stp = self.stp;
        if !f.is_finite() || !g.is_finite() {
            // Step into a region where the objective overflows: shrink towards the best point.
            self.brackt = true;
            self.sty = stp;
            self.fy = f64::INFINITY;
            self.gy = f64::INFINITY;
            self.stp = self.stx + 0.5 * (stp - self.stx);
            if (self.stp - self.stx).abs() <= f64::EPSILON * self.stx.abs().max(1.0) {
                return Action::Stopped(self.stx, "objective not finite along the search direction");
            }
            return Action::Evaluate(self.stp);
        }
        let ftest = self.finit + stp * self.gtest;
        if self.stage == 1 && f <= ftest && g >= 0.0 {
            self.stage = 2;
        }
        if f <= ftest && g.abs() <= self.p.gtol * (-self.ginit) {
            return Action::Converged(stp);
        }
        if self.brackt && (stp <= self.stmin || stp >= self.stmax) {
            return Action::Stopped(stp, "rounding errors prevent progress");
        }
        if self.brackt && self.stmax - self.stmin <= self.p.xtol * self.stmax {
            return Action::Stopped(stp, "bracket width below xtol");
        }
        if stp == self.p.stpmax && f <= ftest && g <= self.gtest {
            return Action::Stopped(stp, "step at the upper bound");
        }
        if stp == self.p.stpmin && (f > ftest || g >= self.gtest) {
            return Action::Stopped(stp, "step at the lower bound");
        }
        if self.stage == 1 && f <= self.fx && f > ftest {
            // Modified function psi(stp) = phi(stp) - phi(0) - ftol stp phi'(0).
            let gt = self.gtest;
            let (mut fxm, mut gxm) = (self.fx - self.stx * gt, self.gx - gt);
            let (mut fym, mut gym) = (self.fy - self.sty * gt, self.gy - gt);
            let (fm, gm) = (f - stp * gt, g - gt);
            let mut sp = stp;
            dcstep(&mut self.stx, &mut fxm, &mut gxm, &mut self.sty, &mut fym, &mut gym, &mut sp, fm, gm, &mut self.brackt, self.stmin, self.stmax);
            self.stp = sp;
            self.fx = fxm + self.stx * gt;
            self.fy = fym + self.sty * gt;
            self.gx = gxm + gt;
            self.gy = gym + gt;
        } else {
            let mut sp = stp;
            dcstep(
                &mut self.stx,
                &mut self.fx,
                &mut self.gx,
                &mut self.sty,
                &mut self.fy,
                &mut self.gy,
                &mut sp,
                f,
                g,
                &mut self.brackt,
                self.stmin,
                self.stmax,
            );
            self.stp = sp;
        }
        if self.brackt {
            if (self.sty - self.stx).abs() >= 0.66 * self.width1 {
                self.stp = self.stx + 0.5 * (self.sty - self.stx);
            }
            self.width1 = self.width;
            self.width = (self.sty - self.stx).abs();
            self.stmin = self.stx.min(self.sty);
            self.stmax = self.stx.max(self.sty);
        } else {
            self.stmin = self.stp + XTRAPL * (self.stp - self.stx);
            self.stmax = self.stp + XTRAPU * (self.stp - self.stx);
        }
        self.stp = self.stp.max(self.p.stpmin).min(self.p.stpmax);
        if self.brackt && (self.stp <= self.stmin || self.stp >= self.stmax || self.stmax - self.stmin <= self.p.xtol * self.stmax) {
            self.stp = self.stx;
        }
        Action::Evaluate(self.stp)
    }

    /// The best step seen so far (lowest phi).
    pub fn best_step(&self) -> f64 {
        self.stx
    }
}

/// One safeguarded step of the interval update (MINPACK-2 `dcstep`).
#[allow(clippy::too_many_arguments)]
fn dcstep(
    stx: &mut f64,
    fx: &mut f64,
    dx: &mut f64,
    sty: &mut f64,
    fy: &mut f64,
    dy: &mut f64,
    stp: &mut f64,
    fp: f64,
    dp: f64,
    brackt: &mut bool,
    stpmin: f64,
    stpmax: f64,
) {
    let sgnd = dp * (*dx / dx.abs());
    let stpf;
    if fp > *fx {
        let theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        let s = theta.abs().max(dx.abs()).max(dp.abs());
        let mut gamma = s * ((theta / s).powi(2) - (*dx / s) * (dp / s)).max(0.0).sqrt();
        if *stp < *stx {
            gamma = -gamma;
        }
        let p = (gamma - *dx) + theta;
        let q = ((gamma - *dx) + gamma) + dp;
        let r = p / q;
        let stpc = *stx + r * (*stp - *stx);
        let stpq = *stx + ((*dx / ((*fx - fp) / (*stp - *stx) + *dx)) / 2.0) * (*stp - *stx);
        stpf = if (stpc - *stx).abs() < (stpq - *stx).abs() { stpc } else { stpc + (stpq - stpc) / 2.0 };
        *brackt = true;
    } else if sgnd < 0.0 {
        let theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        let s = theta.abs().max(dx.abs()).max(dp.abs());
        let mut gamma = s * ((theta / s).powi(2) - (*dx / s) * (dp / s)).max(0.0).sqrt();
        if *stp > *stx {
            gamma = -gamma;
        }
        let p = (gamma - dp) + theta;
        let q = ((gamma - dp) + gamma) + *dx;
        let r = p / q;
        let stpc = *stp + r * (*stx - *stp);
        let stpq = *stp + (dp / (dp - *dx)) * (*stx - *stp);
        stpf = if (stpc - *stp).abs() > (stpq - *stp).abs() { stpc } else { stpq };
        *brackt = true;
    } else if dp.abs() < dx.abs() {
        let theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        let s = theta.abs().max(dx.abs()).max(dp.abs());
        let mut gamma = s * ((theta / s).powi(2) - (*dx / s) * (dp / s)).max(0.0).sqrt();
        if *stp > *stx {
            gamma = -gamma;
        }
        let p = (gamma - dp) + theta;
        let q = (gamma + (*dx - dp)) + gamma;
        let r = p / q;
        let stpc = if r < 0.0 && gamma != 0.0 {
            *stp + r * (*stx - *stp)
        } else if *stp > *stx {
            stpmax
        } else {
            stpmin
        };
        let stpq = *stp + (dp / (dp - *dx)) * (*stx - *stp);
        if *brackt {
            let mut f = if (stpc - *stp).abs() < (stpq - *stp).abs() { stpc } else { stpq };
            f = if *stp > *stx { f.min(*stp + 0.66 * (*sty - *stp)) } else { f.max(*stp + 0.66 * (*sty - *stp)) };
            stpf = f;
        } else {
            let f = if (stpc - *stp).abs() > (stpq - *stp).abs() { stpc } else { stpq };
            stpf = f.min(stpmax).max(stpmin);
        }
    } else if *brackt {
        let theta = 3.0 * (fp - *fy) / (*sty - *stp) + *dy + dp;
        let s = theta.abs().max(dy.abs()).max(dp.abs());
        let mut gamma = s * ((theta / s).powi(2) - (*dy / s) * (dp / s)).max(0.0).sqrt();
        if *stp > *sty {
            gamma = -gamma;
        }
        let p = (gamma - dp) + theta;
        let q = ((gamma - dp) + gamma) + *dy;
        let r = p / q;
        stpf = *stp + r * (*sty - *stp);
    } else if *stp > *stx {
        stpf = stpmax;
    } else {
        stpf = stpmin;
    }
    if fp > *fx {
        *sty = *stp;
        *fy = fp;
        *dy = dp;
    } else {
        if sgnd < 0.0 {
            *sty = *stx;
            *fy = *fx;
            *dy = *dx;
        }
        *stx = *stp;
        *fx = fp;
        *dx = dp;
    }
    *stp = stpf;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(phi: impl Fn(f64) -> (f64, f64), stp0: f64) -> (f64, usize) {
        let (f0, g0) = phi(0.0);
        let (mut ls, mut act) = MoreThuente::start(MoreThuenteParams::default(), f0, g0, stp0);
        for evals in 1..50 {
            match act {
                Action::Evaluate(s) => {
                    let (f, g) = phi(s);
                    act = ls.next(f, g);
                }
                Action::Converged(s) => return (s, evals),
                Action::Stopped(s, why) => panic!("stopped at {s}: {why}"),
            }
        }
        panic!("no convergence")
    }

    /// Strong Wolfe conditions on smooth 1-D functions (the first is More & Thuente's test 1).
    #[test]
    fn finds_strong_wolfe_steps() {
        let tests: [fn(f64) -> (f64, f64); 3] = [
            |a| (-a / (a * a + 2.0), (a * a - 2.0) / (a * a + 2.0).powi(2)),
            |a| ((a - 2.0).powi(4) - a, 4.0 * (a - 2.0).powi(3) - 1.0),
            |a| ((a - 3.0).powi(2), 2.0 * (a - 3.0)),
        ];
        for (i, phi) in tests.iter().enumerate() {
            for stp0 in [1e-3, 1e-1, 1.0, 10.0] {
                let (s, _) = search(phi, stp0);
                let (f0, g0) = phi(0.0);
                let (f, g) = phi(s);
                assert!(f <= f0 + 1e-4 * s * g0, "test {i} from {stp0}: decrease");
                assert!(g.abs() <= 0.9 * g0.abs(), "test {i} from {stp0}: curvature");
            }
        }
    }
}
