//! The `account_balances` projection worker (the same entry point as
//! `cargo run -p strata-projections --example account_balances`).

fn main() -> std::process::ExitCode {
    strata_projections::account_balances::main()
}
