//! wgrad in the browser: a page that trains the MNIST MLP on WebGPU and shows a Hessian of
//! the notes next to its closed form. `tools/web.sh serve` builds it into `target/web/`
//! and serves it; `tools/web_test.sh` runs the browser test suite (tests/browser.rs) and
//! opens this page in headless Chromium.
//!
//! Everything here reads values back with the async forms (`to_vec_async`,
//! `to_scalar_async`, `synchronize_async`): in the browser the blocking forms are errors.
pub mod hessian;
pub mod train;

#[cfg(target_arch = "wasm32")]
mod page;

#[cfg(target_arch = "wasm32")]
pub use web::run_page;

#[cfg(target_arch = "wasm32")]
mod web {
    use crate::page::{fetch_bytes, matrices_html, plot, set_html, set_text};
    use crate::train::{train_mnist, Event, TrainConfig};
    use wasm_bindgen::prelude::*;
    use wgrad::Device;

    fn js(e: wgrad::Error) -> JsValue {
        JsValue::from_str(&e.to_string())
    }

    /// Run the page: the Hessian panel, then `epochs` epochs of MNIST training with a live
    /// loss curve and test accuracy; ends by writing
    /// `final test accuracy: NN.NN% (device: NAME)` into `#status`.
    #[wasm_bindgen]
    pub async fn run_page(epochs: u32) -> Result<(), JsValue> {
        let dev = Device::best_async().await;
        let name = dev.name();
        set_text("device", &format!("device: {name}"));

        let closed = crate::hessian::closed_form();
        let auto = crate::hessian::autograd(&dev).await.map_err(js)?;
        let diff = crate::hessian::max_abs_diff(&auto, &closed);
        set_html(
            "hessian",
            &matrices_html(("hessian(f, x) on the device", &auto), ("closed form (f64)", &closed), diff),
        );

        set_text("status", "fetching MNIST…");
        let mut files = Vec::new();
        for name in
            ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
        {
            files.push(fetch_bytes(&format!("data/{name}.gz")).await?);
        }
        let data = wgrad::data::Mnist::from_bytes(&files[0], &files[1], &files[2], &files[3]).map_err(js)?;
        set_text("status", &format!("training on {} images, testing on {}…", data.train.len(), data.test.len()));

        let cfg = TrainConfig { epochs: epochs.max(1) as usize, ..TrainConfig::default() };
        let (mut losses, mut accuracies) = (Vec::new(), vec![(0.0, 0.1)]);
        plot("accuracy", "test accuracy (%) by epoch", &[], Some((0.0, 100.0)))?;
        let report = train_mnist(&data, &dev, &cfg, |event| match event {
            Event::Loss { step, loss } => {
                losses.push((step as f64, loss));
                let _ = plot("loss", &format!("training loss (step {step}: {loss:.3})"), &losses, None);
            }
            Event::Epoch { epoch, accuracy, images_per_sec } => {
                accuracies.push((epoch as f64, accuracy));
                let pct: Vec<(f64, f64)> = accuracies.iter().map(|&(e, a)| (e, 100.0 * a)).collect();
                let title = format!("test accuracy (%) by epoch: {:.2}%", 100.0 * accuracy);
                let _ = plot("accuracy", &title, &pct, Some((0.0, 100.0)));
                set_text("progress", &format!("epoch {epoch}: {images_per_sec:.0} images/s"));
            }
        })
        .await
        .map_err(js)?;
        set_text(
            "throughput",
            &format!("training throughput: {:.0} images/s over {} steps", report.images_per_sec, report.steps),
        );
        set_text("status", &format!("final test accuracy: {:.2}% (device: {name})", 100.0 * report.accuracy));
        Ok(())
    }
}
