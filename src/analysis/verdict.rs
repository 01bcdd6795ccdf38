//! The verdict of one solve against the theorem, from comparisons that can fail
//! (docs/theory.md §7).
//!
//! Order of judgement:
//! 1. a precondition fails (d < K-1, counts unequal within a multiplicity, or the BCE loss)
//!    -> `outside-theorem`;
//! 2. what float64 cannot back -> `unresolved`, with the reason: a solve whose point, value or
//!    metrics left float64's range, or a prediction that did not validate;
//! 3. an attained objective below the prediction's *certified lower bound* by more than the
//!    objective tolerance -> `violated` (a COUNTEREXAMPLE: a value below the claimed global
//!    minimum refutes the claim, converged or not); below the prediction but within its
//!    certified error -> `unresolved`;
//! 4. the solve did not converge -> `not-converged`;
//! 5. the trivial regime -> `trivial` if the objective matches g(0);
//! 6. above the prediction (or above g(0) in the trivial regime) -> `unresolved`: a stationary
//!    point that is not the global optimum says nothing against a theorem about global minima
//!    (and a certificate proving the minimum above an attained prediction would be a float64
//!    failure, not a counterexample);
//! 7. the certified gap, then every geometry error, within tolerance -> `verified`; a geometry
//!    error beyond what the solve's precision explains -> `violated`, naming the failing
//!    properties with their values; a certificate that does not close, or geometry errors
//!    the precision explains -> `unresolved`.
//!
//! **Default tolerances.** A point at relative objective distance eps from a minimiser of a
//! problem with curvature ~ lambda lies O(sqrt(eps |f*| / lambda)) from the minimiser set, and
//! NC2/NC3/scale/alpha errors are linear in that distance (NC1 is quadratic). The defaults
//! (1e-4 for linear metrics, 1e-8 for NC1, 0.01 degrees for angles) sit one to two orders
//! above what converged solves show, and orders below what a wrong geometry gives (e.g. NC2 ~
//! 0.1 from a random start, angles of degrees).

use serde::{Deserialize, Serialize};

/// The one-word outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Converged, at the prediction, certified, geometry as predicted.
    Verified,
    /// A property failed (named in the reasons).
    Violated,
    /// The solver stopped before the gradient tolerance.
    NotConverged,
    /// The predicted optimum is W = 0, H = 0 and the run agrees.
    Trivial,
    /// A precondition of the theorem fails.
    OutsideTheorem,
    /// float64 cannot back a verdict here, or the solve reached a point that says nothing
    /// either way (named in the reasons).
    Unresolved,
}

impl Verdict {
    /// Every verdict, in the order of the docs' list.
    pub const ALL: [Verdict; 6] = [Verdict::Verified, Verdict::Violated, Verdict::NotConverged, Verdict::Trivial, Verdict::OutsideTheorem, Verdict::Unresolved];

    /// The verdict of a kebab-case name ([`Verdict::name`]).
    pub fn from_name(name: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Violated => "violated",
            Verdict::NotConverged => "not-converged",
            Verdict::Trivial => "trivial",
            Verdict::OutsideTheorem => "outside-theorem",
            Verdict::Unresolved => "unresolved",
        }
    }
}

/// Thresholds of the verdict (all are command-line flags).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Tolerances {
    /// Max |f - f*| / |f*|.
    pub objective: f64,
    /// Max certified relative gap (f - D) / |f|.
    pub certificate: f64,
    /// Max NC2-W, NC2-H, NC3, and relative errors of alpha and of each s_m.
    pub geometry: f64,
    /// Max NC1.
    pub nc1: f64,
    /// Max tag-wise angle in degrees.
    pub angle_deg: f64,
    /// Max ||b|| (lambda_b > 0), or max ||b - mean(b) 1|| (lambda_b = 0).
    pub bias: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances { objective: 1e-9, certificate: 1e-7, geometry: 1e-4, nc1: 1e-8, angle_deg: 1e-2, bias: 1e-4 }
    }
}

impl Tolerances {
    /// Checks that every threshold is a finite number > 0; the error names the flag.
    pub fn validate(&self) -> crate::error::Result<()> {
        for (name, v) in [
            ("--tol-objective", self.objective),
            ("--tol-certificate", self.certificate),
            ("--tol-geometry", self.geometry),
            ("--tol-nc1", self.nc1),
            ("--tol-angle", self.angle_deg),
            ("--tol-bias", self.bias),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(crate::error::Error::new(format!("{name} must be a finite number > 0 (got {v})")));
            }
        }
        Ok(())
    }
}

/// Everything the verdict looks at, already measured.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// d >= K-1.
    pub etf_possible: bool,
    /// Counts equal within each multiplicity.
    pub balanced: bool,
    /// The loss is one the theorem covers (PAL, PAL-mean).
    pub loss_covered: bool,
    /// Predicted trivial regime.
    pub trivial: bool,
    /// Why the prediction cannot be trusted in float64, if it cannot.
    pub prediction_unvalidated: Option<String>,
    /// The prediction's certified relative error: the exact optimum lies within
    /// `[f* (1 - e), f*]` for `f* > 0`.
    pub prediction_error: f64,
    /// Why the solve cannot be trusted in float64 (its point, value or metrics not finite), if
    /// it cannot.
    pub solve_unresolved: Option<String>,
    /// The solve converged (certified at the stop tolerance, or the gradient rule holds).
    pub converged: bool,
    /// (f - f*) / |f*|.
    pub objective_gap: f64,
    /// Certified relative gap, if a bound exists.
    pub certified_gap: Option<f64>,
    /// The certificate's lower bound on min f, relative to the prediction: (D - f*) / |f*|.
    pub certified_bound_gap: Option<f64>,
    /// Named geometry errors with their tolerance class.
    pub geometry: Vec<(String, f64, Kind)>,
    /// How far the point may lie from an optimum, as the solve's precision allows:
    /// `||grad f|| / lambda_min` (exact for a function of curvature at least lambda_min), and
    /// that distance relative to `||x||`. A geometry error that this distance can explain is
    /// not resolved by the solve, whatever its size.
    pub distance: (f64, f64),
}

/// Which tolerance a geometry error is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Linear metrics (NC2, NC3, relative errors).
    Linear,
    /// NC1.
    Nc1,
    /// Angles in degrees.
    Angle,
    /// Bias norm (centred when lambda_b = 0).
    Bias,
}

/// Judges one solve; returns the verdict and the reasons behind it.
pub fn judge(e: &Evidence, tol: &Tolerances) -> (Verdict, Vec<String>) {
    let mut reasons = Vec::new();
    if !e.etf_possible || !e.balanced || !e.loss_covered {
        if !e.loss_covered {
            reasons.push("the theorem covers the pick-all-label loss; for BCE nothing is predicted, the geometry found is reported".into());
        }
        if !e.etf_possible {
            reasons.push("precondition d >= K-1 fails: the simplex ETF does not fit".into());
        }
        if !e.balanced {
            reasons.push("precondition fails: sample counts differ within a multiplicity".into());
        }
        if e.objective_gap.is_finite() {
            reasons.push(format!("objective is {:.3e} relative from the ETF value", e.objective_gap));
        }
        return (Verdict::OutsideTheorem, reasons);
    }
    if let Some(why) = &e.solve_unresolved {
        reasons.push(format!("UNRESOLVED: {why}"));
        return (Verdict::Unresolved, reasons);
    }
    if let Some(why) = &e.prediction_unvalidated {
        reasons.push(format!("UNRESOLVED: the prediction cannot be trusted in float64: {why}"));
        return (Verdict::Unresolved, reasons);
    }
    // Below the exact optimum for sure: below the prediction by more than its certified error
    // and the objective tolerance.
    if e.objective_gap < -(tol.objective + e.prediction_error) {
        reasons.push(format!(
            "COUNTEREXAMPLE: attained objective is below the predicted global optimum by {:.3e} relative (the prediction's certified error is {:.1e})",
            -e.objective_gap, e.prediction_error
        ));
        return (Verdict::Violated, reasons);
    }
    if e.objective_gap < -tol.objective {
        reasons.push(format!("UNRESOLVED: attained objective {:.3e} relative below the prediction, within the prediction's certified error", -e.objective_gap));
        return (Verdict::Unresolved, reasons);
    }
    if !e.converged {
        reasons.push("not converged when the solver stopped (no certified stop, gradient above tolerance)".into());
        return (Verdict::NotConverged, reasons);
    }
    if e.objective_gap > tol.objective {
        let certified_above = e.certified_bound_gap.is_some_and(|g| g > tol.objective);
        reasons.push(if certified_above {
            format!(
                "UNRESOLVED: the certificate bounds the minimum {:.3e} relative above the prediction, which the predicted point attains: float64 cannot back the certificate here",
                e.certified_bound_gap.unwrap_or(f64::NAN)
            )
        } else {
            format!(
                "UNRESOLVED: the objective is {:.3e} relative above the {}, at a point the certificate does not prove optimal{}: a stationary point that is not the global optimum says nothing about the theorem; another start may reach it",
                e.objective_gap,
                if e.trivial { "trivial optimum g(0)" } else { "prediction" },
                e.certified_gap.map(|g| format!(" (gap {g:.1e})")).unwrap_or_default()
            )
        });
        return (Verdict::Unresolved, reasons);
    }
    if e.trivial {
        return (Verdict::Trivial, reasons);
    }
    // A certificate that does not close proves too little; it is no evidence against the
    // theorem, so it can only leave the verdict unresolved.
    let mut unresolved = 0;
    match e.certified_gap {
        None => {
            reasons.push("no certificate of global optimality available".into());
            unresolved += 1;
        }
        Some(g) if !(g <= tol.certificate) => {
            reasons.push(format!("certified gap {g:.3e} > {:.0e}: global optimality is not proved to the tolerance", tol.certificate));
            unresolved += 1;
        }
        _ => {}
    }
    let (dist, rel) = e.distance;
    for (name, v, kind) in &e.geometry {
        let (limit, explained) = match kind {
            Kind::Linear => (tol.geometry, v.abs() <= rel),
            Kind::Nc1 => (tol.nc1, v.abs() <= rel * rel),
            Kind::Angle => (tol.angle_deg, v.abs().to_radians() <= rel),
            Kind::Bias => (tol.bias, v.abs() <= dist),
        };
        if !(v.abs() <= limit) {
            if explained {
                unresolved += 1;
                reasons.push(format!("{name} = {v:.3e} > {limit:.0e}, within what the solve resolves here"));
            } else {
                reasons.push(format!("{name} = {v:.3e} > {limit:.0e}"));
            }
        }
    }
    if reasons.is_empty() {
        (Verdict::Verified, reasons)
    } else if unresolved == reasons.len() {
        reasons.insert(
            0,
            format!("UNRESOLVED: neither the certificate nor the geometry fails the theorem: the point may lie {dist:.1e} ({rel:.1e} relative) from an optimum (||grad f|| / lambda_min), which explains every geometry error above tolerance"),
        );
        (Verdict::Unresolved, reasons)
    } else {
        (Verdict::Violated, reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` lists every verdict once (the match fails to compile when one is added), and
    /// `from_name` reads back each `name` and nothing else.
    #[test]
    fn every_verdict_reads_back_from_its_name() {
        for v in Verdict::ALL {
            match v {
                Verdict::Verified | Verdict::Trivial | Verdict::Violated | Verdict::NotConverged | Verdict::Unresolved | Verdict::OutsideTheorem => {}
            }
            assert_eq!(Verdict::from_name(v.name()), Some(v));
            assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{}\"", v.name()));
        }
        let names: std::collections::BTreeSet<&str> = Verdict::ALL.iter().map(|v| v.name()).collect();
        assert_eq!(names.len(), 6);
        assert_eq!(Verdict::from_name("Verified"), None);
        assert_eq!(Verdict::from_name(""), None);
    }

    fn good() -> Evidence {
        Evidence {
            etf_possible: true,
            balanced: true,
            loss_covered: true,
            trivial: false,
            prediction_unvalidated: None,
            prediction_error: 1e-15,
            solve_unresolved: None,
            converged: true,
            objective_gap: 1e-13,
            certified_gap: Some(1e-10),
            certified_bound_gap: Some(-1e-10),
            distance: (1e-9, 1e-11),
            geometry: vec![("nc2_w".into(), 1e-7, Kind::Linear), ("nc1".into(), 1e-12, Kind::Nc1)],
        }
    }

    #[test]
    fn each_verdict_is_reachable() {
        let t = Tolerances::default();
        assert_eq!(judge(&good(), &t).0, Verdict::Verified);
        assert_eq!(judge(&Evidence { etf_possible: false, ..good() }, &t).0, Verdict::OutsideTheorem);
        assert_eq!(judge(&Evidence { converged: false, ..good() }, &t).0, Verdict::NotConverged);
        assert_eq!(judge(&Evidence { trivial: true, ..good() }, &t).0, Verdict::Trivial);
        let below = judge(&Evidence { objective_gap: -1e-6, converged: false, ..good() }, &t);
        assert_eq!(below.0, Verdict::Violated);
        assert!(below.1[0].contains("COUNTEREXAMPLE"));
        let geo = judge(&Evidence { geometry: vec![("nc3".into(), 0.2, Kind::Linear)], ..good() }, &t);
        assert_eq!(geo.0, Verdict::Violated);
        assert!(geo.1[0].contains("nc3 = 2.000e-1"));
        let nan = judge(&Evidence { geometry: vec![("nc1".into(), f64::NAN, Kind::Nc1)], ..good() }, &t);
        assert_eq!(nan.0, Verdict::Violated, "a NaN metric must never pass");
        // A certificate that does not close proves too little: unresolved, not violated.
        assert_eq!(judge(&Evidence { certified_gap: Some(1e-3), ..good() }, &t).0, Verdict::Unresolved);
        let both = judge(&Evidence { certified_gap: Some(1e-3), geometry: vec![("nc3".into(), 0.2, Kind::Linear)], ..good() }, &t);
        assert_eq!(both.0, Verdict::Violated);
        // What float64 cannot back is never violated.
        let bad_pred = judge(&Evidence { prediction_unvalidated: Some("q underflows".into()), objective_gap: -0.5, ..good() }, &t);
        assert_eq!(bad_pred.0, Verdict::Unresolved);
        assert!(bad_pred.1[0].contains("q underflows"));
        assert_eq!(judge(&Evidence { solve_unresolved: Some("NaN".into()), ..good() }, &t).0, Verdict::Unresolved);
        // Below the prediction, but within its certified error: unresolved, not a counterexample.
        assert_eq!(judge(&Evidence { objective_gap: -2e-9, prediction_error: 5e-9, ..good() }, &t).0, Verdict::Unresolved);
        // A stationary point above the prediction: unresolved.
        let above = judge(&Evidence { objective_gap: 1e-3, certified_gap: Some(1e-2), ..good() }, &t);
        assert_eq!(above.0, Verdict::Unresolved);
        assert!(above.1[0].contains("another start"));
        // A bias error the solve's precision explains is unresolved; one it does not is violated.
        let bias = vec![("bias norm".to_string(), 2e-3, Kind::Bias)];
        assert_eq!(judge(&Evidence { geometry: bias.clone(), distance: (2e-2, 1e-4), ..good() }, &t).0, Verdict::Unresolved);
        assert_eq!(judge(&Evidence { geometry: bias, distance: (2e-5, 1e-7), ..good() }, &t).0, Verdict::Violated);
    }
}
