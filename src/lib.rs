pub use wgrad_core::*;
