//! `strata`, built inside the test package: the tests start this binary as
//! their server processes. It is the `strata` command itself, nothing else.

fn main() -> std::process::ExitCode {
    strata_server::cli::main()
}
