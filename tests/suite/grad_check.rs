//! The gradient checker itself can fail: sin(x) written as a user primitive with a wrong VJP,
//! a wrong JVP or a wrong second derivative is rejected with `Error::GradCheck` naming the
//! order and the mode, on both devices; the correct primitive passes the same checks.
use crate::common::*;
use std::sync::Arc;
use wgrad::{check_grads, check_grads_with, custom_op, CheckOptions, CustomOp, DType, Device, Error, Result, Tensor};

/// What is wrong with a [`Sine`].
#[derive(Clone, Copy, PartialEq, Debug)]
enum Flaw {
    None,
    /// d sin = 1.5 cos x in the VJP (the JVP is right).
    Vjp,
    /// d sin = 2 cos x in the JVP (the VJP is right).
    Jvp,
    /// d sin = cos x with x detached: right at order 1, but the VJP's own derivative (the
    /// second derivative, -sin x) is lost.
    SecondOrder,
}

/// sin(x) with hand-written rules: VJP g cos x, JVP t cos x; each can be broken.
struct Sine(Flaw);

impl CustomOp for Sine {
    fn name(&self) -> &str {
        "checked_sine"
    }
    fn vjp(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let slope = match self.0 {
            Flaw::Vjp => x.cos()?.mul_scalar(1.5)?,
            Flaw::SecondOrder => x.detach().cos()?,
            Flaw::None | Flaw::Jvp => x.cos()?,
        };
        Ok(vec![Some(g.mul(&slope)?)])
    }
    fn jvp(&self, inputs: &[Tensor], _out: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let x = &inputs[0];
        let slope = match self.0 {
            Flaw::Jvp => x.cos()?.mul_scalar(2.0)?,
            Flaw::SecondOrder => x.detach().cos()?,
            Flaw::None | Flaw::Vjp => x.cos()?,
        };
        t[0].as_ref().map(|t| t.mul(&slope)).transpose()
    }
}

fn sine(flaw: Flaw) -> impl Fn(&Tensor) -> Result<Tensor> {
    let op = Arc::new(Sine(flaw));
    move |x: &Tensor| custom_op(op.clone(), &[x], || x.sin())
}

/// Check `flaw` on `x` and assert the outcome: Ok for no flaw, else GradCheck at the order
/// and in the mode the flaw breaks.
fn assert_caught(flaw: Flaw, x: &Tensor, opts: CheckOptions, dev: &Device) {
    let f = sine(flaw);
    let r = check_grads_with(&f, x, 2, opts);
    let want = match flaw {
        Flaw::None => {
            r.unwrap_or_else(|e| panic!("the correct sine fails on {dev}: {e}"));
            return;
        }
        Flaw::Vjp => (1, "reverse"),
        Flaw::Jvp => (1, "forward"),
        Flaw::SecondOrder => (2, "reverse or forward"),
    };
    match r {
        Err(Error::GradCheck { order, mode, analytic, numeric, .. }) => {
            assert_eq!(order, want.0, "{flaw:?} on {dev}: caught at order {order} ({mode})");
            assert!(want.1.contains(mode), "{flaw:?} on {dev}: caught in {mode} mode, want {}", want.1);
            assert!((analytic - numeric).abs() > 1e-3, "{flaw:?}: {analytic} vs {numeric}");
        }
        other => panic!("{flaw:?} on {dev}: check_grads gave {other:?}, want Error::GradCheck"),
    }
}

const FLAWS: [Flaw; 4] = [Flaw::None, Flaw::Vjp, Flaw::Jvp, Flaw::SecondOrder];

#[test]
fn check_grads_rejects_a_wrong_vjp_jvp_or_second_derivative_on_the_cpu() {
    let x = random(&[5], -1.5, 1.5);
    for flaw in FLAWS {
        assert_caught(flaw, &x, CheckOptions::f64(), &cpu());
    }
    // the default entry point (f64 on the CPU) and each mode alone
    assert!(matches!(check_grads(sine(Flaw::Vjp), &x, 1), Err(Error::GradCheck { order: 1, mode: "reverse", .. })));
    let reverse_only = CheckOptions { forward: false, ..CheckOptions::f64() };
    let forward_only = CheckOptions { reverse: false, ..CheckOptions::f64() };
    check_grads_with(sine(Flaw::Jvp), &x, 2, reverse_only).expect("a wrong JVP is invisible to reverse mode");
    check_grads_with(sine(Flaw::Vjp), &x, 2, forward_only).expect("a wrong VJP is invisible to forward mode");
    check_grads_with(sine(Flaw::SecondOrder), &x, 1, CheckOptions::f64()).expect("order 1 is right");
    // a NaN derivative is a mismatch, never a pass
    let nan = |x: &Tensor| x.sqrt();
    let at_negative = Tensor::from_slice(&[-1.0f64, 2.0], &[2], &cpu()).unwrap();
    assert!(matches!(check_grads(nan, &at_negative, 1), Err(Error::GradCheck { .. })));
}

#[test]
fn check_grads_rejects_a_wrong_vjp_jvp_or_second_derivative_on_the_gpu() {
    with_gpu!(g);
    let x = random(&[5], -1.5, 1.5).to_dtype(DType::F32).unwrap().to_device(&g).unwrap();
    for flaw in FLAWS {
        assert_caught(flaw, &x, CheckOptions::f32(), &g);
    }
}
