//! VJPs of the elementwise primitives.
use std::sync::Arc;
use wgrad_core::kernels::{BinaryOp, UnaryOp};
use wgrad_core::{Node, Result, Tensor};

pub(crate) fn unary(op: UnaryOp, s: f64, node: &Arc<Node>, g: &Tensor) -> Result<Tensor> {
    let x = || node.input(0);
    let out = || Node::output(node);
    match op {
        // d(-x) = -dx
        UnaryOp::Neg => g.neg(),
        // d exp(x) = exp(x) dx
        UnaryOp::Exp => g.mul(&out()?),
        // d log(x) = dx / x
        UnaryOp::Log => g.div(x()?),
        // d sqrt(x) = dx / (2 sqrt(x))
        UnaryOp::Sqrt => g.div(&out()?.mul_scalar(2.0)?),
        // d |x| = sign(x) dx
        UnaryOp::Abs => g.mul(&x()?.sign()?),
        // d tanh(x) = (1 - tanh(x)^2) dx
        UnaryOp::Tanh => {
            let t = out()?;
            g.mul(&t.mul(&t)?.neg()?.add_scalar(1.0)?)
        }
        // d sigmoid(x) = s (1 - s) dx
        UnaryOp::Sigmoid => {
            let sg = out()?;
            g.mul(&sg.mul(&sg.neg()?.add_scalar(1.0)?)?)
        }
        // d relu(x) = [x > 0] dx
        UnaryOp::Relu => {
            let x = x()?;
            g.binary(BinaryOp::WherePositive, x)
        }
        // d sin(x) = cos(x) dx
        UnaryOp::Sin => g.mul(&x()?.cos()?),
        // d cos(x) = -sin(x) dx
        UnaryOp::Cos => g.mul(&x()?.sin()?.neg()?),
        // d (1/x) = -(1/x)^2 dx
        UnaryOp::Recip => {
            let r = out()?;
            g.mul(&r.mul(&r)?)?.neg()
        }
        // sign is piecewise constant: d sign(x) = 0
        UnaryOp::Sign => g.zeros_like(),
        // d (x + s) = dx
        UnaryOp::AddScalar => Ok(g.clone()),
        // d (s x) = s dx
        UnaryOp::MulScalar => g.mul_scalar(s),
        // d x^p = p x^(p-1) dx
        UnaryOp::PowScalar => g.mul(&x()?.powf(s - 1.0)?.mul_scalar(s)?),
        // d b^x = b^x ln(b) dx
        UnaryOp::RPowScalar => g.mul(&out()?.mul_scalar(s.ln())?),
    }
}

pub(crate) fn binary(op: BinaryOp, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let a = || node.input(0);
    let b = || node.input(1);
    let both = |ga: Tensor, gb: Tensor| Ok(vec![Some(ga), Some(gb)]);
    match op {
        // d(a + b) = da + db
        BinaryOp::Add => both(g.clone(), g.clone()),
        // d(a - b) = da - db
        BinaryOp::Sub => both(g.clone(), g.neg()?),
        // d(a b) = b da + a db
        BinaryOp::Mul => both(g.mul(b()?)?, g.mul(a()?)?),
        // d(a / b) = da / b - a / b^2 db
        BinaryOp::Div => {
            let (a, b) = (a()?, b()?);
            let ga = g.div(b)?;
            both(ga.clone(), ga.mul(a)?.div(b)?.neg()?)
        }
        // d(a^b) = b a^(b-1) da + a^b ln(a) db
        BinaryOp::Pow => {
            let (a, b) = (a()?, b()?);
            let out = Node::output(node)?;
            both(g.mul(&b.mul(&a.pow(&b.add_scalar(-1.0)?)?)?)?, g.mul(&out.mul(&a.log()?)?)?)
        }
        // d max(a, b) = [a > b] da + [b > a] db, ties split evenly
        BinaryOp::Maximum => split(a()?, b()?, g, BinaryOp::Gt),
        // d min(a, b) = [a < b] da + [b < a] db, ties split evenly
        BinaryOp::Minimum => split(a()?, b()?, g, BinaryOp::Lt),
        // comparisons are piecewise constant: no gradient
        BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => Ok(vec![None, None]),
        // d (a [b > 0]) = [b > 0] da (the mask is flat in b almost everywhere)
        BinaryOp::WherePositive => Ok(vec![Some(g.binary(BinaryOp::WherePositive, b()?)?), None]),
    }
}

fn split(a: &Tensor, b: &Tensor, g: &Tensor, wins: BinaryOp) -> Result<Vec<Option<Tensor>>> {
    let wa = a.binary(wins, b)?.add(&a.eq(b)?.mul_scalar(0.5)?)?;
    let ga = g.mul(&wa)?;
    let gb = g.mul(&wa.neg()?.add_scalar(1.0)?)?;
    Ok(vec![Some(ga), Some(gb)])
}

/// d where(c, a, b) = [c] da + [not c] db; the mask has no gradient.
pub(crate) fn where_(node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let c = node.input(0)?;
    let z = g.zeros_like()?;
    Ok(vec![None, Some(c.where_(g, &z)?), Some(c.where_(&z, g)?)])
}
