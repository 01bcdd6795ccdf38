//! The `mlab-nc` binary: parses arguments and prints; everything else is in the library.

fn main() {
    std::process::exit(mlab_nc::cli::main_with_args(std::env::args_os()));
}
