//! wgrad-autograd: reverse- and forward-mode automatic differentiation over wgrad-core tensors.
//!
//! - the rules (VJP and JVP) live with each primitive's block in `wgrad-core`;
//! - [`engine`] walks the recorded graph backwards and unbroadcasts once;
//! - `interpreters` hold forward mode and vmap, which core's `bind` hands primitives to;
//! - the transforms ([`grad`], [`value_and_grad`], [`vjp`], [`jvp`], [`jacobian`],
//!   [`hessian`], [`hvp`], [`value_and_grad_many`]) nest to any order;
//! - [`check_grads`] compares derivatives with central finite differences.
mod check;
pub mod engine;
mod interpreters;
mod transforms;

pub use check::{check_grads, check_grads_with, CheckOptions};
pub use engine::{backward, unbroadcast};
pub use transforms::{
    grad, hessian, hvp, jacfwd, jacfwd_chunked, jacobian, jacrev, jacrev_chunked, jvp, value_and_grad,
    value_and_grad_many, vjp, vmap, vmap_many, VmapOutput,
};
pub use wgrad_core::{custom_op, no_grad, CustomOp};
