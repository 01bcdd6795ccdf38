//! Figure 7: unequal counts within a multiplicity (outside the theorem). Left: the
//! least-squares synthesis weights of mu_{0,K-1} over its own tags' means against the
//! class-frequency ratio rho (balanced value s_2/2 dashed). Right: the largest off-span
//! residual over all multi-label sets and the certified gap of each solve.

use plotters::coord::Shift;
use plotters::prelude::*;
use rayon::prelude::*;
use serde::Deserialize;

use super::{experiment, legend, log_range, pe, Figure, FONT, PALETTE};
use crate::commands::verify::{verify, VerifyOptions};
use crate::error::Result;
use crate::model::config::{skewed_counts, UfmConfig};
use crate::model::loss::Loss;

#[derive(Deserialize)]
struct Exp {
    classes: usize,
    max_labels: usize,
    per_set: Vec<usize>,
    lambda: f64,
    rho_max: f64,
    points: usize,
}

/// Per rho: (rho, c_frequent, c_rare, max residual, certified gap).
pub struct Skew {
    rows: Vec<(f64, f64, f64, f64, f64)>,
    balanced: f64,
    k: usize,
    title: String,
}

/// Solves one skewed configuration per rho.
pub fn compute() -> Result<Skew> {
    let e: Exp = experiment("fig7_skew.toml", include_str!("../../../experiments/fig7_skew.toml"))?;
    let base = UfmConfig {
        classes: e.classes,
        max_labels: e.max_labels,
        dim: e.classes,
        per_set: e.per_set.clone(),
        lambda_w: e.lambda,
        lambda_h: e.lambda,
        lambda_b: e.lambda,
        loss: Loss::Pal,
    };
    let balanced = verify(&base.clone().validate()?, &[0], &VerifyOptions::default())?.predicted.scale[1].unwrap_or(f64::NAN) / 2.0;
    let rhos: Vec<f64> = (0..e.points).map(|i| e.rho_max.powf(i as f64 / (e.points - 1) as f64)).collect();
    let target = vec![0, e.classes - 1];
    let rows = rhos
        .par_iter()
        .map(|&rho| -> Result<(f64, f64, f64, f64, f64)> {
            let cfg = base.clone().validate_with_counts(skewed_counts(&base, rho, false))?;
            let r = verify(&cfg, &[0], &VerifyOptions::default())?;
            let run = &r.runs[0];
            let s = run.synthesis.iter().find(|s| s.set == target);
            let (c0, c1) = s.map(|s| (s.weights[0], s.weights[1])).unwrap_or((f64::NAN, f64::NAN));
            let res = run.synthesis.iter().map(|s| s.residual).fold(0.0, f64::max);
            Ok((rho, c0, c1, res.max(1e-16), run.certificate.relative_gap.unwrap_or(f64::NAN).max(1e-16)))
        })
        .collect::<Result<_>>()?;
    Ok(Skew {
        rows,
        balanced,
        k: e.classes,
        title: format!("Unequal counts within a multiplicity (K = {}, M = {}, counts {:?} x class weights)", e.classes, e.max_labels, e.per_set),
    })
}

impl Figure for Skew {
    fn name(&self) -> &'static str {
        "fig7_skew"
    }
    fn size(&self) -> (u32, u32) {
        (1400, 700)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let area = area.titled(&self.title, (FONT, 22)).map_err(pe)?;
        let (left, right) = area.split_horizontally(700);
        let rmax = self.rows.iter().map(|r| r.0).fold(1.0, f64::max);
        // Labels at the powers of 2 up to the largest ratio (plotters' own log ticks stop at 10).
        let ticks: Vec<f64> = (0..64).map(|i| 2f64.powi(i)).take_while(|&v| v <= rmax * 1.1).collect();
        let ys: Vec<f64> = self.rows.iter().flat_map(|r| [r.1, r.2]).chain([self.balanced]).collect();
        let (ylo, yhi) = ys.iter().fold((f64::INFINITY, 0.0f64), |(a, b), &y| (a.min(y), b.max(y)));
        let pad = (yhi - ylo).max(1e-3) * 0.15;
        let mut ch = ChartBuilder::on(&left)
            .caption("synthesis weights of mu_{0,K-1} = c_0 mu_0 + c_{K-1} mu_{K-1}", (FONT, 16))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((0.9..rmax * 1.1).log_scale().with_key_points(ticks.clone()), ylo - pad..yhi + pad)
            .map_err(pe)?;
        ch.configure_mesh()
            .x_desc("class-frequency ratio ρ (most / least frequent class)")
            .y_desc("weight c")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(pe)?;
        let k = self.k;
        for (i, (label, pick)) in
            [("c_0 (most frequent class 0)".to_string(), 1usize), (format!("c_{} (least frequent class {})", k - 1, k - 1), 2)].into_iter().enumerate()
        {
            let col = PALETTE[i];
            let pts: Vec<(f64, f64)> = self.rows.iter().map(|r| (r.0, if pick == 1 { r.1 } else { r.2 })).collect();
            ch.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
                .map_err(pe)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
            ch.draw_series(pts.iter().map(|p| Circle::new(*p, 5, col.filled()))).map_err(pe)?;
        }
        ch.draw_series(DashedLineSeries::new(vec![(0.9, self.balanced), (rmax * 1.1, self.balanced)], 6, 4, BLACK.stroke_width(1)))
            .map_err(pe)?
            .label(format!("balanced theory s_2/2 = {:.4}", self.balanced))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        legend(&mut ch, SeriesLabelPosition::LowerLeft, 13)?;
        let (lo, hi) = log_range(self.rows.iter().flat_map(|r| [r.3, r.4]));
        let mut ch = ChartBuilder::on(&right)
            .caption("off-span residual and certified gap", (FONT, 16))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((0.9..rmax * 1.1).log_scale().with_key_points(ticks), (lo..hi).log_scale())
            .map_err(pe)?;
        ch.configure_mesh()
            .x_desc("class-frequency ratio ρ")
            .y_desc("relative value (log scale)")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(pe)?;
        for (i, (label, pick)) in [("max over S of ||mu_S - fit|| / ||mu_S||", 3usize), ("certified duality gap (f - D)/f", 4)].into_iter().enumerate() {
            let col = PALETTE[i + 2];
            let pts: Vec<(f64, f64)> = self.rows.iter().map(|r| (r.0, if pick == 3 { r.3 } else { r.4 })).collect();
            ch.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
                .map_err(pe)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
            ch.draw_series(pts.iter().map(|p| Circle::new(*p, 5, col.filled()))).map_err(pe)?;
        }
        legend(&mut ch, SeriesLabelPosition::MiddleRight, 13)?;
        Ok(())
    }
}
