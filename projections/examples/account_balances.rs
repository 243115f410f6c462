//! The `account_balances` projection worker:
//! `cargo run -p strata-projections --example account_balances -- --database-url URL`.

fn main() -> std::process::ExitCode {
    strata_projections::account_balances::main()
}
