//! wgrad-autograd: reverse-mode automatic differentiation over wgrad-core tensors.
//!
//! - [`rules`](crate) hold one VJP per primitive, written with differentiable ops;
//! - [`engine`] walks the recorded graph backwards and unbroadcasts once;
//! - the transforms ([`grad`], [`value_and_grad`], [`vjp`], [`jvp`], [`jacobian`],
//!   [`hessian`], [`hvp`], [`value_and_grad_many`]) nest to any order;
//! - [`check_grads`] compares derivatives with central finite differences.
mod check;
pub mod engine;
mod rules;
mod transforms;

pub use check::{check_grads, check_grads_with, CheckOptions};
pub use engine::{backward, unbroadcast};
pub use transforms::{grad, hessian, hvp, jacobian, jvp, value_and_grad, value_and_grad_many, vjp};
pub use wgrad_core::graph::{custom_op, no_grad, CustomOp};
