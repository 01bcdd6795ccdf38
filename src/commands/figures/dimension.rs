//! Figure 5: the relative gap of the best of several starts to the ETF value g(gamma*), and
//! its certified duality gap, against the feature dimension d. Below d = K-1 the simplex ETF
//! does not fit and both gaps stay large; from d = K-1 on they drop to rounding level.

use plotters::coord::Shift;
use plotters::prelude::*;
use rayon::prelude::*;
use serde::Deserialize;

use super::{decades, experiment, legend, log_range, pe, Figure, FONT, PALETTE};
use crate::commands::verify::{verify, VerifyOptions};
use crate::error::Result;
use crate::model::loss::Loss;

#[derive(Deserialize)]
struct Exp {
    classes: usize,
    max_labels: usize,
    per_set: usize,
    lambda: f64,
    dim_max: usize,
    seeds: u64,
}

/// Gap per dimension.
pub struct Dimension {
    rows: Vec<(f64, f64, f64)>,
    k: usize,
    title: String,
}

/// Floor for plotting gaps that are at rounding level (or exactly 0, or negative by rounding).
const FLOOR: f64 = 1e-16;

/// Solves every d with several starts.
pub fn compute() -> Result<Dimension> {
    let e: Exp = experiment("fig5_dimension.toml", include_str!("../../../experiments/fig5_dimension.toml"))?;
    let seeds: Vec<u64> = (0..e.seeds).collect();
    let rows = (1..=e.dim_max)
        .into_par_iter()
        .map(|d| -> Result<(f64, f64, f64)> {
            let cfg = super::config(e.classes, e.max_labels, d, vec![e.per_set], e.lambda, Loss::Pal)?;
            let r = verify(&cfg, &seeds, &VerifyOptions::default())?;
            let best = r.best_run().map(|b| (b.relative_objective_gap, b.certificate.relative_gap.unwrap_or(f64::NAN)));
            let (gap, cert) = best.unwrap_or((f64::NAN, f64::NAN));
            Ok((d as f64, gap.max(FLOOR), cert.max(FLOOR)))
        })
        .collect::<Result<_>>()?;
    Ok(Dimension {
        rows,
        k: e.classes,
        title: format!("Feature dimension: gap to the ETF optimum (K = {}, M = {}, λ = {:e}, best of {} starts)", e.classes, e.max_labels, e.lambda, e.seeds),
    })
}

impl Figure for Dimension {
    fn name(&self) -> &'static str {
        "fig5_dimension"
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let dmax = self.rows.iter().map(|r| r.0).fold(1.0, f64::max);
        let (lo, hi) = log_range(self.rows.iter().flat_map(|r| [r.1, r.2]));
        let mut ch = ChartBuilder::on(area)
            .caption(&self.title, (FONT, 20))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0.5..dmax + 0.5, (lo..hi).log_scale().with_key_points(decades(lo, hi)))
            .map_err(pe)?;
        ch.configure_mesh()
            .x_desc("feature dimension d")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("relative gap (log scale; 1e-16 = rounding level)")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(pe)?;
        for (i, (label, pick)) in [("objective gap (f - f*)/f*", 1usize), ("certified duality gap (f - D)/f", 2)].into_iter().enumerate() {
            let col = PALETTE[i];
            let pts: Vec<(f64, f64)> = self.rows.iter().map(|r| (r.0, if pick == 1 { r.1 } else { r.2 })).collect();
            ch.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
                .map_err(pe)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
            ch.draw_series(pts.iter().map(|p| Circle::new(*p, 6, col.filled()))).map_err(pe)?;
        }
        let kk = (self.k - 1) as f64;
        ch.draw_series(DashedLineSeries::new(vec![(kk, lo), (kk, hi)], 6, 4, BLACK.stroke_width(1)))
            .map_err(pe)?
            .label(format!("d = K - 1 = {}", self.k - 1))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        legend(&mut ch, SeriesLabelPosition::UpperRight, 14)?;
        Ok(())
    }
}
