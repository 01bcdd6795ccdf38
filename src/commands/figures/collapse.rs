//! Figure 1: the paper's UFM figure from real solves (K = 3; M = 1 top, M = 2 bottom):
//! features projected on the top two singular vectors of H at the start, the middle and the
//! end of L-BFGS; a line from the origin to each label-set mean (solid m = 1, dashed m = 2);
//! multiplicity-2 samples as two-colour markers; the end panels overlay the simplex ETF
//! (triangle of the class means) and the predicted scaled tag-wise averages s_2 (mu_a+mu_b)/2.

use std::sync::{Arc, Mutex};

use nalgebra::DMatrix;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

use super::{experiment, legend, pe, Figure, FONT, PALETTE};
use crate::error::Result;
use crate::model::loss::Loss;
use crate::model::objective::UfmObjective;
use crate::solver::SolveParams;
use crate::theory::prediction::predict;

#[derive(Deserialize)]
struct Exp {
    classes: usize,
    dim: usize,
    per_set: usize,
    lambda: f64,
    init_std: f64,
    seed: u64,
    middle_gap: f64,
}

/// An iterate recorded by the solver's callback: (iteration, objective, parameters).
type Snapshot = (u64, f64, Vec<f64>);

/// One panel: projected samples and means.
pub struct Panel {
    title: String,
    points: Vec<(f64, f64)>,
    set_of: Vec<usize>,
    means: Vec<(f64, f64)>,
    /// Predicted s_2 (mu_a + mu_b)/2 per set (end panels only).
    theory: Vec<(f64, f64)>,
}

/// The figure's data.
pub struct Collapse {
    rows: Vec<(Vec<Vec<usize>>, Vec<Panel>)>,
    classes: usize,
}

fn project(h: &DMatrix<f64>, sets: &[Vec<usize>], set_of: &[usize], scale2: Option<f64>, title: String) -> Result<Panel> {
    // Singular values come sorted, largest first.
    let u = crate::linalg::jacobi::svd(h).ok_or_else(|| crate::error::Error::new("figure 1: features are not finite"))?.u;
    let (u1, u2) = (u.column(0).into_owned(), u.column(1.min(u.ncols() - 1)).into_owned());
    let points: Vec<(f64, f64)> = h.column_iter().map(|c| (c.dot(&u1), c.dot(&u2))).collect();
    let mut means = vec![(0.0, 0.0); sets.len()];
    let mut counts = vec![0.0; sets.len()];
    for (p, &s) in points.iter().zip(set_of) {
        means[s].0 += p.0;
        means[s].1 += p.1;
        counts[s] += 1.0;
    }
    for (m, c) in means.iter_mut().zip(&counts) {
        m.0 /= c;
        m.1 /= c;
    }
    let theory = match scale2 {
        Some(s2) => sets
            .iter()
            .filter(|s| s.len() == 2)
            .map(|s| {
                let (a, b) = (means[s[0]], means[s[1]]);
                (s2 * (a.0 + b.0) / 2.0, s2 * (a.1 + b.1) / 2.0)
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(Panel { title, points, set_of: set_of.to_vec(), means, theory })
}

/// Solves the two configurations and projects the three snapshots of each.
pub fn compute() -> Result<Collapse> {
    let e: Exp = experiment("fig1_collapse.toml", include_str!("../../../experiments/fig1_collapse.toml"))?;
    let mut rows = Vec::new();
    for m in [1usize, 2] {
        let cfg = super::config(e.classes, m, e.dim, vec![e.per_set; m], e.lambda, Loss::Pal)?;
        let pred = predict(&cfg);
        let obj = UfmObjective::new(&cfg);
        let snaps: Arc<Mutex<Vec<Snapshot>>> = Arc::new(Mutex::new(Vec::new()));
        let s2 = snaps.clone();
        let cb = Box::new(move |it: u64, x: &[f64], f: f64, _g: f64| {
            if let Ok(mut v) = s2.lock() {
                v.push((it, f, x.to_vec()));
            }
        });
        obj.solve(e.seed, &SolveParams { init_std: e.init_std, ..SolveParams::default() }, Some(cb))?;
        let snaps = snaps.lock().map(|v| v.clone()).unwrap_or_default();
        let last = snaps.len() - 1;
        let mid = snaps.iter().position(|s| (s.1 - pred.objective) / pred.objective <= e.middle_gap).unwrap_or(last / 2).min(last);
        let sets = cfg.labels.sets.clone();
        let set_of: Vec<usize> = cfg.labels.set_of.iter().map(|&s| s as usize).collect();
        let mut panels = Vec::new();
        for (label, idx) in [("start", 0), ("middle", mid), ("end", last)] {
            let (it, f, x) = &snaps[idx];
            let p = obj.split(x);
            let h = DMatrix::from_column_slice(p.h.rows, p.h.cols, p.h.data);
            let gap = (f - pred.objective) / pred.objective;
            let s2 = if label == "end" && m == 2 { pred.scale[1] } else { None };
            panels.push(project(&h, &sets, &set_of, s2, format!("M = {m}, {label}: iteration {it}, gap {gap:.1e}"))?);
        }
        rows.push((sets, panels));
    }
    Ok(Collapse { rows, classes: e.classes })
}

/// Pixel offsets of a half disc of radius `r` starting at angle `start` (counter-clockwise).
fn half_disc(start: f64, r: i32) -> Vec<(i32, i32)> {
    let mut v = vec![(0, 0)];
    for i in 0..=12 {
        let t = start + std::f64::consts::PI * i as f64 / 12.0;
        v.push(((r as f64 * t.cos()).round() as i32, (r as f64 * t.sin()).round() as i32));
    }
    v
}

impl Figure for Collapse {
    fn name(&self) -> &'static str {
        "fig1_collapse"
    }
    fn size(&self) -> (u32, u32) {
        (1500, 1000)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let area = area
            .titled(
                &format!("Multi-label neural collapse in the UFM (K = {}, PAL loss): features on their top-2 singular directions", self.classes),
                (FONT, 24),
            )
            .map_err(pe)?;
        let cells = area.split_evenly((2, 3));
        for (r, (sets, panels)) in self.rows.iter().enumerate() {
            for (c, p) in panels.iter().enumerate() {
                let cell = &cells[r * 3 + c];
                let lim = p.points.iter().chain(&p.theory).map(|q| q.0.abs().max(q.1.abs())).fold(1e-12, f64::max) * 1.2;
                // Equal aspect (angles are the point of the figure); end panels leave room below for the legend.
                let (w, h) = cell.dim_in_pixel();
                let (pw, ph) = (w as f64 - 56.0, h as f64 - 70.0);
                let (ylo, yhi) = if c == 2 { (-lim * if r == 1 { 2.3 } else { 1.9 }, lim) } else { (-lim, lim) };
                let half_w = (yhi - ylo) / 2.0 * pw / ph;
                let mut ch = ChartBuilder::on(cell)
                    .caption(&p.title, (FONT, 16))
                    .margin(8)
                    .x_label_area_size(28)
                    .y_label_area_size(40)
                    .build_cartesian_2d(-half_w..half_w, ylo..yhi)
                    .map_err(pe)?;
                ch.configure_mesh()
                    .x_desc("singular direction 1")
                    .y_desc("singular direction 2")
                    .label_style((FONT, 11))
                    .light_line_style(WHITE.mix(0.0))
                    .draw()
                    .map_err(pe)?;
                let colour = |s: &Vec<usize>| PALETTE[s[0] % PALETTE.len()];
                for (j, s) in sets.iter().enumerate() {
                    let line = vec![(0.0, 0.0), p.means[j]];
                    if s.len() == 1 {
                        ch.draw_series(LineSeries::new(line, colour(s).stroke_width(2))).map_err(pe)?;
                    } else {
                        ch.draw_series(DashedLineSeries::new(line, 8, 5, BLACK.mix(0.7).stroke_width(2))).map_err(pe)?;
                    }
                }
                for (pt, &s) in p.points.iter().zip(&p.set_of) {
                    let set = &sets[s];
                    if set.len() == 1 {
                        ch.draw_series(std::iter::once(Circle::new(*pt, 5, colour(set).filled()))).map_err(pe)?;
                    } else {
                        // A two-colour marker: left half in the first tag's colour, right half in the second's.
                        let (a, b) = (PALETTE[set[0]], PALETTE[set[1]]);
                        let left = EmptyElement::at(*pt) + Polygon::new(half_disc(std::f64::consts::FRAC_PI_2, 6), a.filled());
                        let right = EmptyElement::at(*pt) + Polygon::new(half_disc(-std::f64::consts::FRAC_PI_2, 6), b.filled());
                        ch.draw_series(std::iter::once(left)).map_err(pe)?;
                        ch.draw_series(std::iter::once(right)).map_err(pe)?;
                        ch.draw_series(std::iter::once(Circle::new(*pt, 6, BLACK.stroke_width(1)))).map_err(pe)?;
                    }
                }
                if c == 2 {
                    let k = self.classes;
                    let mut tri: Vec<(f64, f64)> = (0..k).map(|j| p.means[j]).collect();
                    tri.push(p.means[0]);
                    ch.draw_series(DashedLineSeries::new(tri, 4, 4, RGBColor(90, 90, 90).stroke_width(1)))
                        .map_err(pe)?
                        .label("simplex ETF of the class means")
                        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RGBColor(90, 90, 90)));
                    if !p.theory.is_empty() {
                        ch.draw_series(p.theory.iter().map(|q| Cross::new(*q, 9, BLACK.stroke_width(2))))
                            .map_err(pe)?
                            .label("theory: s_2 x tag-wise average")
                            .legend(|(x, y)| Cross::new((x + 9, y), 6, BLACK.stroke_width(2)));
                    }
                    for (j, colour) in PALETTE.iter().enumerate().take(k) {
                        ch.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                            .map_err(pe)?
                            .label(format!("class {j} (m = 1 samples)"))
                            .legend(move |(x, y)| Circle::new((x + 9, y), 5, colour.filled()));
                    }
                    if r == 1 {
                        ch.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                            .map_err(pe)?
                            .label("m = 2 samples (two tags), dashed: mean")
                            .legend(|(x, y)| Circle::new((x + 9, y), 6, BLACK.stroke_width(1)));
                    }
                    legend(&mut ch, SeriesLabelPosition::LowerRight, 11)?;
                }
            }
        }
        Ok(())
    }
}
