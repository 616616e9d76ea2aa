//! The `kura` command: a thin wrapper over [`kura::cli`].

fn main() -> std::process::ExitCode {
    kura::alloc::tune();
    kura::cli::main()
}
