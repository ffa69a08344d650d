//! What differs between native and the browser: blocking waits exist only on native.

use crate::context::Context;
use crate::error::KResult;
#[cfg(target_arch = "wasm32")]
use crate::error::KernelError;
use std::future::Future;

/// Run a future to completion on this thread (native), or, in the browser, where the page
/// must not block, the error naming the async form of `call`.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn block_on<T>(
    f: impl Future<Output = KResult<T>>,
    _call: &'static str,
    _use_instead: &'static str,
) -> KResult<T> {
    pollster::block_on(f)
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn block_on<T>(
    _f: impl Future<Output = KResult<T>>,
    call: &'static str,
    use_instead: &'static str,
) -> KResult<T> {
    Err(KernelError::Blocking { call, use_instead })
}

impl Context {
    /// The error an error scope caught. Native waits for it; in the browser the answer
    /// comes later, so it is recorded as the device's fault and reported by the next call
    /// (as an uncaptured error would be).
    pub(crate) fn pop_error_scope(&self, scope: wgpu::ErrorScopeGuard) -> Option<wgpu::Error> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            pollster::block_on(scope.pop())
        }
        #[cfg(target_arch = "wasm32")]
        {
            let fault = self.fault_slot();
            let popped = scope.pop();
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(e) = popped.await {
                    crate::lock(&fault).get_or_insert_with(|| e.to_string());
                }
            });
            None
        }
    }
}
