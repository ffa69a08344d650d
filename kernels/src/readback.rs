//! Waiting for the GPU: readbacks and synchronization, blocking on native and as futures
//! everywhere. In the browser nothing may block (the page's event loop delivers wgpu's
//! callbacks), so there the blocking forms are [`KernelError::Blocking`] errors that name
//! the async form, and the async forms wait for the callback. On native the futures do
//! the same wait as the blocking forms when first polled, so they finish under any
//! executor.

use crate::context::Context;
use crate::counters::AtomicCounters;
use crate::error::{KResult, KernelError};
use crate::GpuBuffer;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

/// A value that a wgpu callback delivers once, awaited by one task (or, natively, waited
/// for by one thread).
pub(crate) struct Signal<T> {
    slot: Arc<Slot<T>>,
}

/// The value once delivered, the task to wake for it, and the condition a thread waits on.
struct Slot<T> {
    state: Mutex<(Option<T>, Option<Waker>)>,
    delivered: Condvar,
}

impl<T> Signal<T> {
    pub(crate) fn new() -> Signal<T> {
        Signal { slot: Arc::new(Slot { state: Mutex::new((None, None)), delivered: Condvar::new() }) }
    }

    /// The sending half, for the callback: stores the value and wakes the waiter.
    pub(crate) fn sender(&self) -> impl FnOnce(T) + Send + 'static
    where
        T: Send + 'static,
    {
        let slot = self.slot.clone();
        move |value| {
            let mut s = crate::lock(&slot.state);
            s.0 = Some(value);
            if let Some(w) = s.1.take() {
                w.wake();
            }
            slot.delivered.notify_all();
        }
    }

    /// The value, waiting up to `timeout` for it. A callback runs on the thread whose
    /// poll found its work done, which may be another thread still running it after this
    /// thread's own poll returned.
    pub(crate) fn wait(&self, timeout: Duration) -> Option<T> {
        let guard = crate::lock(&self.slot.state);
        let (mut guard, _) = self
            .slot
            .delivered
            .wait_timeout_while(guard, timeout, |s| s.0.is_none())
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.0.take()
    }
}

impl<T> Future for Signal<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<T> {
        let mut s = crate::lock(&self.slot.state);
        match s.0.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A readback in flight: the copy into a mappable staging buffer is submitted and its
/// map requested.
pub(crate) struct PendingRead {
    staging: wgpu::Buffer,
    mapped: Signal<Result<(), wgpu::BufferAsyncError>>,
}

impl Context {
    /// Queue a copy of `len` bytes at `offset` of `buf` into a staging buffer, submit the
    /// batch and request the map (counted as a readback).
    fn start_read(&self, buf: &GpuBuffer, offset: u64, len: u64) -> KResult<PendingRead> {
        self.check_health()?;
        AtomicCounters::add(&self.counters.readbacks, 1);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgrad readback"),
            size: len,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut st = crate::lock(&self.state);
            st.encoder(&self.device).copy_buffer_to_buffer(buf.raw(), offset, &staging, 0, len);
            st.submit(self);
        }
        let mapped = Signal::new();
        staging.map_async(wgpu::MapMode::Read, .., mapped.sender());
        Ok(PendingRead { staging, mapped })
    }

    /// The bytes of a read whose map has completed.
    fn finish_read(&self, read: PendingRead, mapped: Result<(), wgpu::BufferAsyncError>) -> KResult<Vec<u8>> {
        self.check_health()?;
        mapped.map_err(|e| KernelError::Gpu(format!("mapping the readback buffer failed: {e}")))?;
        let data =
            read.staging.get_mapped_range(..).map_err(|e| KernelError::Gpu(format!("mapped range: {e:?}")))?.to_vec();
        read.staging.unmap();
        Ok(data)
    }

    /// Read `len` bytes at `offset` of a buffer back to the host, blocking until the GPU
    /// has produced them (or the readback timeout passes). In the browser this is
    /// [`KernelError::Blocking`]: use [`Context::read_async`].
    pub fn read(&self, buf: &GpuBuffer, offset: u64, len: u64) -> KResult<Vec<u8>> {
        if cfg!(target_arch = "wasm32") {
            return Err(KernelError::Blocking { call: "read", use_instead: "read_async" });
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let read = self.start_read(buf, offset, len)?;
        self.wait_idle()?;
        let Some(mapped) = read.mapped.wait(Duration::from_secs(1)) else {
            return Err(KernelError::ReadbackTimeout(self.readback_timeout()));
        };
        self.finish_read(read, mapped)
    }

    /// [`Context::read`] as a future: in the browser it waits for the map callback, on
    /// native it waits as `read` does when first polled.
    pub async fn read_async(&self, buf: &GpuBuffer, offset: u64, len: u64) -> KResult<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut read = self.start_read(buf, offset, len)?;
        if !cfg!(target_arch = "wasm32") {
            self.wait_idle()?;
        }
        let mapped = (&mut read.mapped).await;
        self.finish_read(read, mapped)
    }

    /// Submit and wait until the GPU has finished all submitted work. In the browser this
    /// is [`KernelError::Blocking`]: use [`Context::synchronize_async`].
    pub fn synchronize(&self) -> KResult<()> {
        if cfg!(target_arch = "wasm32") {
            return Err(KernelError::Blocking { call: "synchronize", use_instead: "synchronize_async" });
        }
        self.check_health()?;
        crate::lock(&self.state).submit(self);
        self.wait_idle()?;
        self.check_health()
    }

    /// [`Context::synchronize`] as a future (the queue's submitted-work-done callback).
    pub async fn synchronize_async(&self) -> KResult<()> {
        self.check_health()?;
        crate::lock(&self.state).submit(self);
        let done = Signal::new();
        let send = done.sender();
        self.queue.on_submitted_work_done(move || send(()));
        if !cfg!(target_arch = "wasm32") {
            self.wait_idle()?;
        }
        done.await;
        self.check_health()
    }

    /// Submit what is batched and wait up to `timeout` for the GPU to finish it, ignoring
    /// faults (for a `Drop`: work in flight outliving its owner). Nothing in the browser,
    /// where nothing may wait.
    pub fn finish_in_flight(&self, timeout: Duration) {
        if cfg!(target_arch = "wasm32") {
            return;
        }
        crate::lock(&self.state).submit(self);
        let _ = self.wait_for(timeout);
    }

    /// Block until the GPU has finished all submitted work, or error after the readback
    /// timeout ([`Context::set_readback_timeout`]). A no-op in the browser, whose wgpu
    /// cannot wait.
    pub(crate) fn wait_idle(&self) -> KResult<()> {
        self.wait_for(self.readback_timeout())
    }

    /// Block until the GPU has finished all submitted work, or error after `timeout`.
    fn wait_for(&self, timeout: Duration) -> KResult<()> {
        self.device.poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(timeout) }).map_err(
            |e| match e {
                wgpu::PollError::Timeout => KernelError::ReadbackTimeout(timeout),
                other => KernelError::Gpu(other.to_string()),
            },
        )?;
        Ok(())
    }
}
