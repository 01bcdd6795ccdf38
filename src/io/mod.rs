//! Files in and out: `.npy` arrays, JSON reports, JSON-lines result files, and the terminal
//! tables.

pub mod jsonl;
pub mod npy;
pub mod report;

/// A TOML parse error as one line, with where it happened: `line L, column C: ` (from the
/// error's span) before TOML's own message, which for some errors (an integer beyond its
/// signed 64 bits) says only what. Used for sweep files and experiment files alike.
pub fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let at = e.span().map(|s| s.start.min(text.len())).filter(|&at| text.is_char_boundary(at));
    let Some(at) = at else { return e.message().to_string() };
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}: {}", e.message())
}
