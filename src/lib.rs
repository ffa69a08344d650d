//! # wgrad
//!
//! Tensors with automatic differentiation whose data lives on the GPU through wgpu,
//! with a CPU reference backend. See the README for a tour.
pub use wgrad_core::*;
pub use wgrad_kernels::wgpu;
