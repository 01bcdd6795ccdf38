//! Figure 9: below the ETF dimension (d < K-1). Left: the singular values of W at the best
//! of several starts, normalised by the largest, against d (the ETF has K-1 equal ones).
//! Right: how the structure degrades: NC2-W and the largest tag-wise angle against d.

use plotters::coord::Shift;
use plotters::prelude::*;
use rayon::prelude::*;
use serde::Deserialize;

use super::{experiment, legend, pe, Figure, FONT, PALETTE};
use crate::commands::verify::{verify, VerifyOptions};
use crate::error::Result;
use crate::model::loss::Loss;

#[derive(Deserialize)]
struct Exp {
    classes: usize,
    max_labels: usize,
    per_set: usize,
    lambda: f64,
    seeds: u64,
}

/// Per d: normalised singular values, NC2-W, max tag angle.
pub struct LowDim {
    rows: Vec<(usize, Vec<f64>, f64, f64)>,
    k: usize,
    title: String,
}

/// Solves d = 1..=K with several starts each.
pub fn compute() -> Result<LowDim> {
    let e: Exp = experiment("fig9_lowdim.toml", include_str!("../../../experiments/fig9_lowdim.toml"))?;
    let seeds: Vec<u64> = (0..e.seeds).collect();
    let rows = (1..=e.classes)
        .into_par_iter()
        .map(|d| -> Result<(usize, Vec<f64>, f64, f64)> {
            let cfg = super::config(e.classes, e.max_labels, d, vec![e.per_set], e.lambda, Loss::Pal)?;
            let r = verify(&cfg, &seeds, &VerifyOptions::default())?;
            let best = r.best_run().ok_or_else(|| crate::error::Error::new("no runs"))?;
            let sv = match &best.geometry {
                Some(g) => g.classifier_singular_values.clone(),
                None => Vec::new(),
            };
            let sv = if sv.is_empty() {
                // d >= K-1: the ETF; its K-1 nonzero singular values are equal.
                vec![1.0; e.classes - 1]
            } else {
                let top = sv[0];
                sv.iter().map(|v| v / top).collect()
            };
            let angle = best.metrics.tag.iter().filter_map(|t| t.max_angle_deg).fold(0.0, f64::max);
            Ok((d, sv, best.metrics.nc2_w.unwrap_or(f64::NAN), angle))
        })
        .collect::<Result<_>>()?;
    Ok(LowDim {
        rows,
        k: e.classes,
        title: format!("Below the ETF dimension: K = {}, M = {}, d = 1..{} (best of {} starts)", e.classes, e.max_labels, e.classes, e.seeds),
    })
}

impl Figure for LowDim {
    fn name(&self) -> &'static str {
        "fig9_lowdim"
    }
    fn size(&self) -> (u32, u32) {
        (1400, 700)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let area = area.titled(&self.title, (FONT, 22)).map_err(pe)?;
        let (left, right) = area.split_horizontally(700);
        let dmax = self.k as f64;
        let mut ch = ChartBuilder::on(&left)
            .caption("singular values of W / largest", (FONT, 16))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0.5..dmax + 0.5, 0.0..1.1)
            .map_err(pe)?;
        ch.configure_mesh()
            .x_desc("feature dimension d")
            .y_desc("σ_i(W) / σ_1(W)")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(pe)?;
        for (d, sv, _, _) in &self.rows {
            ch.draw_series(sv.iter().enumerate().map(|(i, v)| Circle::new((*d as f64 + 0.06 * i as f64 - 0.1, *v), 5, PALETTE[i % PALETTE.len()].filled())))
                .map_err(pe)?;
        }
        let kk = (self.k - 1) as f64;
        ch.draw_series(DashedLineSeries::new(vec![(kk, 0.0), (kk, 1.1)], 6, 4, BLACK.stroke_width(1)))
            .map_err(pe)?
            .label(format!("d = K - 1 = {}: K-1 equal singular values (ETF)", self.k - 1))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        legend(&mut ch, SeriesLabelPosition::LowerLeft, 13)?;
        let amax = self.rows.iter().map(|r| r.3).fold(1.0, f64::max) * 1.15;
        let mut ch = ChartBuilder::on(&right)
            .caption("NC2-W (left axis) and largest tag-wise angle (right axis)", (FONT, 16))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .right_y_label_area_size(55)
            .build_cartesian_2d(0.5..dmax + 0.5, 0.0..1.5)
            .map_err(pe)?
            .set_secondary_coord(0.5..dmax + 0.5, 0.0..amax);
        ch.configure_mesh()
            .x_desc("feature dimension d")
            .y_desc("NC2-W")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(pe)?;
        ch.configure_secondary_axes().y_desc("max tag-wise angle (degrees)").label_style((FONT, 13)).axis_desc_style((FONT, 14)).draw().map_err(pe)?;
        let nc: Vec<(f64, f64)> = self.rows.iter().map(|r| (r.0 as f64, r.2)).collect();
        let an: Vec<(f64, f64)> = self.rows.iter().map(|r| (r.0 as f64, r.3)).collect();
        let (c0, c1) = (PALETTE[0], PALETTE[1]);
        ch.draw_series(LineSeries::new(nc.clone(), c0.stroke_width(2)))
            .map_err(pe)?
            .label("NC2-W")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c0.stroke_width(2)));
        ch.draw_series(nc.iter().map(|p| Circle::new(*p, 5, c0.filled()))).map_err(pe)?;
        ch.draw_secondary_series(LineSeries::new(an.clone(), c1.stroke_width(2)))
            .map_err(pe)?
            .label("max tag-wise angle")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c1.stroke_width(2)));
        ch.draw_secondary_series(an.iter().map(|p| Circle::new(*p, 5, c1.filled()))).map_err(pe)?;
        legend(&mut ch, SeriesLabelPosition::UpperRight, 13)?;
        Ok(())
    }
}
