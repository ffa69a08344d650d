use thiserror::Error;

/// Faults of the GPU runtime. The core crate wraps these in the public `wgrad::Error`.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum KernelError {
    #[error("no GPU adapter found{hint}. {}", no_adapter_advice())]
    NoAdapter { hint: String },
    #[error("requesting a device from adapter '{adapter}' failed: {msg}")]
    RequestDevice { adapter: String, msg: String },
    #[error("kernel '{kernel}' failed to compile: {msg}")]
    Compile { kernel: String, msg: String },
    #[error("GPU out of memory allocating {bytes} bytes: {msg}")]
    OutOfMemory { bytes: u64, msg: String },
    #[error("buffer of {bytes} bytes exceeds the adapter limit {limit} = {max} bytes")]
    BufferTooLarge { bytes: u64, limit: &'static str, max: u64 },
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    #[error("readback did not complete within {0:?}")]
    ReadbackTimeout(std::time::Duration),
    /// A blocking call in the browser, where nothing may block: the async form works.
    #[error("{call} blocks, which the browser forbids: use {use_instead}(...).await instead")]
    Blocking { call: &'static str, use_instead: &'static str },
    #[error("GPU error: {0}")]
    Gpu(String),
    #[error("unsupported on the GPU: {0}")]
    Unsupported(String),
    #[error("dispatch of '{kernel}' needs {groups} workgroups, over the adapter limit {max} per dimension")]
    GridTooLarge { kernel: String, groups: u64, max: u32 },
}

pub type KResult<T> = std::result::Result<T, KernelError>;

/// What to do without an adapter, where the program runs.
fn no_adapter_advice() -> &'static str {
    if cfg!(target_arch = "wasm32") {
        "Use a browser with WebGPU enabled (Chrome or Edge 113+, Safari 26+, Firefox 141+ on \
         Windows), or Device::cpu() (Device::best_async() falls back to it)"
    } else {
        "On a machine without a GPU install Mesa's lavapipe (Debian/Ubuntu: `apt-get install \
         mesa-vulkan-drivers`), or use Device::cpu()"
    }
}
