//! wgrad's integration suite: one binary (one link, one shared GPU device).
//! GPU tests run on the default adapter (lavapipe on machines without a GPU) and FAIL
//! when there is none, unless WGRAD_SKIP_GPU_TESTS=1 opts out explicitly.
// Index arithmetic is written as in the math (1 * 2 + c), identity factors included.
#![allow(clippy::identity_op)]
mod common;

mod async_api;
mod autograd_ops;
mod autograd_transforms;
mod checkpoint;
mod elementwise;
mod embed_threads;
mod ergonomics;
mod errors;
mod f16;
mod flat_params;
mod forward_mode;
mod fusion;
mod grad_check;
mod grid_order;
mod jit;
mod linalg;
mod matmul;
mod movement_index;
mod nn_train;
mod random;
mod reduce;
mod runtime;
mod transformer;
mod vmap;
