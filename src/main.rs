//! The `kura` command: a thin wrapper over [`kura::cli`].

fn main() -> std::process::ExitCode {
    kura::cli::main()
}
