//! `figures` writes every figure as a real PNG and SVG (headless, embedded font).

#[test]
fn all_figures_render_as_png_and_svg() {
    let dir = std::env::temp_dir().join(format!("mlab-nc-figs-{}", std::process::id()));
    let files = mlab_nc::commands::figures::render_all(&dir).unwrap();
    let pngs: Vec<_> = files.iter().filter(|f| f.extension().is_some_and(|e| e == "png")).collect();
    let svgs: Vec<_> = files.iter().filter(|f| f.extension().is_some_and(|e| e == "svg")).collect();
    assert!(pngs.len() >= 6 && svgs.len() >= 6);
    for p in pngs {
        let b = std::fs::read(p).unwrap();
        assert!(b.starts_with(b"\x89PNG\r\n\x1a\n"), "{p:?}");
        assert!(b.len() > 20_000, "{p:?} is too small to be a real plot: {} bytes", b.len());
    }
    for s in svgs {
        let t = std::fs::read_to_string(s).unwrap();
        assert!(t.contains("<svg") && t.contains("<text") && t.matches("<polyline").count() + t.matches("<circle").count() > 5, "{s:?}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// An experiment file that does not parse is named with the line and column TOML found the
/// fault at, as a sweep file is (`io::toml_message`): an array left open on line 2, and an
/// integer beyond TOML's signed 64 bits, which starts at line 2, column 5.
#[test]
fn a_bad_experiment_file_says_where() {
    let e = mlab_nc::commands::figures::experiment::<toml::Table>("x.toml", "a = 1\nb = [1,\n").unwrap_err().0;
    assert!(e.starts_with("experiments/x.toml: line 2, column "), "{e}");
    let e = mlab_nc::commands::figures::experiment::<toml::Table>("x.toml", "a = 1\nb = 9223372036854775808\n").unwrap_err().0;
    assert!(e.starts_with("experiments/x.toml: line 2, column 5: "), "{e}");
}
