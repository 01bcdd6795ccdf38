//! `mlab-nc train`: trains, prints one row per evaluation and a progress bar, and ends with
//! the measured tag-wise scale beside the UFM's.

use std::path::Path;

use crate::error::Result;
use crate::io::jsonl::progress;
use crate::network::train::{train, Outputs, Progress, Record, TrainOptions};

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3e}")).unwrap_or_else(|| "-".into())
}

/// One row of the evaluation table.
pub fn row(r: &Record) -> String {
    let tag = r.metrics.tag.first();
    format!(
        "{:>6} {:>10.4e} {:>7.2}% {:>7.2}% {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}",
        r.epoch,
        r.train_loss,
        100.0 * r.train.exact,
        100.0 * r.test.exact,
        opt(r.metrics.nc1),
        opt(r.metrics.nc2_w),
        opt(r.metrics.nc2_h),
        opt(r.metrics.nc3),
        tag.and_then(|t| t.mean_angle_deg).map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into()),
        tag.and_then(|t| t.scale_mean).map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into()),
        tag.and_then(|t| t.scale_pred).map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into()),
    )
}

/// The header of [`row`].
pub const HEADER: &str = " epoch       loss   train    test        NC1      NC2-W      NC2-H        NC3  angle2   scale2  ufm s_2";

/// Runs `train` and prints what it measured.
pub fn run(o: &TrainOptions, outs: &Outputs) -> Result<i32> {
    let out = outs.out.as_deref().unwrap_or(Path::new("-"));
    let pb = progress(o.epochs, "epochs", true);
    // The header comes with the first row, so that an error in the options or the data is
    // the only output.
    let mut header = false;
    let mut on_record = |r: &Record| {
        pb.suspend(|| {
            if !std::mem::replace(&mut header, true) {
                println!("{HEADER}");
            }
            println!("{}", row(r))
        })
    };
    let mut on_epoch = |p: Progress| {
        pb.set_position(p.epoch as u64);
        pb.set_message(format!("loss {:.3e}  train {:.1}%", p.loss, 100.0 * p.train_exact));
    };
    let res = train(o, outs, &mut on_record, &mut on_epoch)?;
    pb.finish_and_clear();
    let r = &res.last;
    if let Some(e) = res.resumed_from {
        println!("resumed from the checkpoint of epoch {e}");
    }
    if let Some(p) = res.paused_at {
        println!("paused after the checkpoint of epoch {p}; continue with the same flags and --resume");
        return Ok(0);
    }
    println!(
        "{} parameters ({} trained); median {:.3} s per epoch; {} evaluations in {}",
        r.params,
        r.trainable_params,
        res.median_epoch_seconds,
        r.epoch.div_ceil(o.eval_every) + 1,
        out.display()
    );
    for t in &r.metrics.tag {
        println!(
            "m={}: tag-wise scale {} [{}..{}] vs UFM s_{} = {} (lambda_w = {:.3e}, lambda_h = fd/N = {:.3e}); mean angle {} deg",
            t.multiplicity,
            t.scale_mean.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into()),
            t.scale_min.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into()),
            t.scale_max.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into()),
            t.multiplicity,
            t.scale_pred.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into()),
            r.ufm.lambda_w,
            r.ufm.lambda_h,
            t.mean_angle_deg.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into()),
        );
    }
    println!("UFM objective at the network's last layer {:.6e} vs the UFM's global minimum {:.6e}", r.ufm.objective_at_network, r.ufm.objective);
    if let Some(d) = &outs.export {
        println!("features, labels, classifier and bias written to {} (read them with `mlab-nc measure`)", d.display());
    }
    Ok(0)
}
