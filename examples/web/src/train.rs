//! The page's training loop: the MNIST MLP of `examples/mnist.rs` (784-256-128-10, ReLU,
//! Adam, batch 128), jitted, reading values back only through the async forms so that it
//! runs in the browser; on native it runs the same under any executor.
use web_time::Instant;
use wgrad::data::Mnist;
use wgrad::nn::{self, Activation, Ctx, Linear, Module, Params, Sequential};
use wgrad::optim::{Adam, Optimizer};
use wgrad::{no_grad, value_and_grad_many, Device, Result, Tensor};

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
    /// Read the running loss back every this many steps (each read waits for the GPU).
    pub report_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig { epochs: 3, batch: 128, lr: 1e-3, seed: 0, report_every: 10 }
    }
}

/// What the loop reports as it goes.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    /// The mean training loss of the steps since the last report, after `step` steps.
    Loss { step: usize, loss: f64 },
    /// The test accuracy after an epoch, and the epoch's training throughput.
    Epoch { epoch: usize, accuracy: f64, images_per_sec: f64 },
}

/// The outcome: final test accuracy and the training throughput over all epochs.
#[derive(Clone, Copy, Debug)]
pub struct TrainReport {
    pub accuracy: f64,
    pub images_per_sec: f64,
    pub steps: usize,
}

/// The MLP of examples/mnist.rs.
pub fn mlp(params: &mut Params, seed: u64, dev: &Device) -> Result<Sequential> {
    Ok(Sequential::new()
        .push(Linear::new(params, "fc1", 784, 256, seed, dev)?)
        .push(Activation::Relu)
        .push(Linear::new(params, "fc2", 256, 128, seed + 1, dev)?)
        .push(Activation::Relu)
        .push(Linear::new(params, "fc3", 128, 10, seed + 2, dev)?))
}

/// A permutation of 0..n from a seed (Fisher-Yates on SplitMix64).
fn shuffled(n: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    order
}

/// The fraction of `x`'s rows whose argmax is the label in `y`.
async fn accuracy(model: &Sequential, params: &Params, x: &Tensor, y: &Tensor) -> Result<f64> {
    let correct = no_grad(|| model.forward(&Ctx::eval(params.tensors()), x)?.argmax(1, false)?.eq(y)?.sum_all())?;
    Ok(correct.to_scalar_async::<f64>().await? / y.numel() as f64)
}

/// Train the MLP on `data` on `dev`, calling `on` with the loss and accuracy as they come.
/// Full batches only, so every step has one signature and the jit replays it.
pub async fn train_mnist(
    data: &Mnist,
    dev: &Device,
    cfg: &TrainConfig,
    mut on: impl FnMut(Event),
) -> Result<TrainReport> {
    let (train_x, _) = data.train.to_tensors(dev)?;
    // labels are gathered on the host (index_select takes float tensors on the GPU)
    let train_y: Vec<u32> = data.train.labels.iter().map(|&l| l as u32).collect();
    let (test_x, test_y) = data.test.to_tensors(dev)?;
    let mut params = Params::new();
    let model = mlp(&mut params, cfg.seed, dev)?;
    // one flat buffer: Adam updates all six tensors in one dispatch under the browser's
    // limit of 8 storage buffers per kernel (otherwise three, of two tensors each)
    params.flatten()?;
    let mut opt = Adam::new(cfg.lr);
    let steps_per_epoch = data.train.len() / cfg.batch;
    let (mut step, mut train_secs, mut accuracy_now) = (0, 0.0, 0.0);
    for epoch in 1..=cfg.epochs {
        let train_step = |a: &[Tensor]| -> Result<Vec<Tensor>> {
            let loss_of = |p: &[Tensor]| nn::cross_entropy(&model.forward(&Ctx::train(p, 0), &a[0])?, &a[1]);
            let (loss, grads) = value_and_grad_many(loss_of, params.tensors())?;
            opt.step(&mut params, &grads)?;
            Ok(vec![loss])
        };
        let mut run_step = wgrad::jit(train_step);
        let order = shuffled(data.train.len(), cfg.seed + epoch as u64);
        let t0 = Instant::now();
        let mut loss_sum = Tensor::zeros(&[], wgrad::DType::F32, dev)?;
        let mut since_report = 0;
        for chunk in order.chunks_exact(cfg.batch) {
            let idx = Tensor::from_slice(chunk, &[chunk.len()], dev)?;
            let labels: Vec<u32> = chunk.iter().map(|&i| train_y[i as usize]).collect();
            let (xb, yb) = (train_x.index_select(0, &idx)?, Tensor::from_slice(&labels, &[labels.len()], dev)?);
            let loss = run_step.call(&[xb, yb])?.remove(0);
            loss_sum = no_grad(|| loss_sum.add(&loss))?;
            step += 1;
            since_report += 1;
            if since_report == cfg.report_every {
                let mean = loss_sum.to_scalar_async::<f64>().await? / since_report as f64;
                on(Event::Loss { step, loss: mean });
                loss_sum = Tensor::zeros(&[], wgrad::DType::F32, dev)?;
                since_report = 0;
            }
        }
        drop(run_step);
        dev.synchronize_async().await?;
        let secs = t0.elapsed().as_secs_f64();
        train_secs += secs;
        accuracy_now = accuracy(&model, &params, &test_x, &test_y).await?;
        let images_per_sec = (steps_per_epoch * cfg.batch) as f64 / secs.max(1e-9);
        on(Event::Epoch { epoch, accuracy: accuracy_now, images_per_sec });
    }
    let images_per_sec = (step * cfg.batch) as f64 / f64::max(train_secs, 1e-9);
    Ok(TrainReport { accuracy: accuracy_now, images_per_sec, steps: step })
}

#[cfg(test)]
mod tests {
    #[test]
    fn shuffled_is_a_permutation_that_depends_on_the_seed() {
        let (a, b) = (super::shuffled(1000, 1), super::shuffled(1000, 2));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
        assert_ne!(a, b);
    }
}
