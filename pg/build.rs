//! `sqlx::migrate!` embeds `../migrations` when this crate compiles, and
//! cargo does not know that it reads that folder: without this, a new
//! migration is left out of an incremental build until a source file of
//! this crate changes.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
