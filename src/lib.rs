//! # wgrad
//!
//! Tensors with automatic differentiation whose data lives on the GPU through wgpu,
//! with a CPU reference backend. See the README for a tour.
pub use wgrad_autograd::{
    backward, check_grads, check_grads_with, grad, hessian, hvp, jacfwd, jacfwd_chunked, jacobian, jacrev,
    jacrev_chunked, jvp, unbroadcast, value_and_grad, value_and_grad_many, vjp, vmap, vmap_many, CheckOptions,
    VmapOutput,
};
pub use wgrad_core::*;

pub mod data;
pub mod nn;
pub mod optim;
pub use wgrad_kernels::wgpu;

/// The README's code blocks, compiled and run as doctests so its snippets cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
