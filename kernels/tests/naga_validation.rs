//! Every WGSL source the runtime can build is valid WGSL (no GPU needed).
use wgrad_kernels::{all_kernels, validate_wgsl};

#[test]
fn every_kernel_variant_validates_with_naga() {
    let keys = all_kernels();
    assert!(keys.len() > 40, "the kernel list looks truncated: {}", keys.len());
    let mut failures = Vec::new();
    for key in &keys {
        let source = key.source();
        if let Err(e) = validate_wgsl(&source) {
            failures.push(format!("{}:\n{e}", key.name()));
        }
        // the runtime sets the grid order's override on every pipeline
        if !source.contains("override CONTIGUOUS_RUNS") {
            failures.push(format!("{}: does not include common.wgsl", key.name()));
        }
    }
    assert!(failures.is_empty(), "{} of {} kernels failed:\n{}", failures.len(), keys.len(), failures.join("\n"));
}
