//! Turns lock validation on (`cfg(validate)`, see `src/validate.rs`) in
//! builds with debug assertions and in builds with the `validate` feature;
//! never under loom, whose models run without it.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(validate)");
    println!("cargo::rerun-if-changed=build.rs");
    let on = |name| std::env::var_os(name).is_some();
    if (on("CARGO_CFG_DEBUG_ASSERTIONS") || on("CARGO_FEATURE_VALIDATE")) && !on("CARGO_CFG_LOOM") {
        println!("cargo::rustc-cfg=validate");
    }
}
