use crate::common::*;
use wgrad::{DType, Tensor};

#[test]
fn views_and_copies_match_the_reference() {
    with_gpu!(g);
    let (r, d) = pair(&[3, 4, 5], -1.0, 1.0, &g);
    let r = rounded(&r);
    let check = |got: Tensor, want: Tensor, what: &str| assert_close(&got, &want, 0.0, 0.0, what);
    check(
        d.permute(&[2, 0, 1]).unwrap().contiguous().unwrap(),
        r.permute(&[2, 0, 1]).unwrap().contiguous().unwrap(),
        "permute",
    );
    check(
        d.transpose(0, 2).unwrap().reshape(&[5, 12]).unwrap(),
        r.transpose(0, 2).unwrap().reshape(&[5, 12]).unwrap(),
        "reshape of transpose",
    );
    check(d.narrow(1, 1, 2).unwrap(), r.narrow(1, 1, 2).unwrap(), "narrow");
    check(d.narrow(2, 4, 1).unwrap().squeeze(2).unwrap(), r.narrow(2, 4, 1).unwrap().squeeze(2).unwrap(), "squeeze");
    check(
        d.unsqueeze(1).unwrap().broadcast_to(&[3, 2, 4, 5]).unwrap().contiguous().unwrap(),
        r.unsqueeze(1).unwrap().broadcast_to(&[3, 2, 4, 5]).unwrap().contiguous().unwrap(),
        "broadcast",
    );
    let parts_d = [d.narrow(1, 0, 1).unwrap(), d.t().unwrap().t().unwrap(), d.narrow(1, 2, 2).unwrap()];
    let parts_r = [r.narrow(1, 0, 1).unwrap(), r.clone(), r.narrow(1, 2, 2).unwrap()];
    check(Tensor::cat(&parts_d, 1).unwrap(), Tensor::cat(&parts_r, 1).unwrap(), "cat");
    check(
        Tensor::stack(&[d.clone(), d.clone()], -1).unwrap(),
        Tensor::stack(&[r.clone(), r.clone()], -1).unwrap(),
        "stack",
    );
    // hand-computed
    let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &g).unwrap();
    assert_eq!(x.t().unwrap().to_vec::<f32>().unwrap(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(Tensor::cat(&[x.clone(), x.clone()], 0).unwrap().shape(), &[4, 3]);
}

#[test]
fn index_select_gather_one_hot() {
    for dev in devices() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &dev).unwrap();
        let idx = Tensor::from_slice(&[2u32, 0, 2], &[3], &dev).unwrap();
        assert_eq!(x.index_select(1, &idx).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 1.0, 3.0, 6.0, 4.0, 6.0]);
        let rows = Tensor::from_slice(&[1u32, 1, 0], &[3], &dev).unwrap();
        assert_eq!(
            x.index_select(0, &rows).unwrap().to_vec::<f32>().unwrap(),
            vec![4.0, 5.0, 6.0, 4.0, 5.0, 6.0, 1.0, 2.0, 3.0]
        );
        let labels = Tensor::from_slice(&[2u32, 0], &[2, 1], &dev).unwrap();
        assert_eq!(x.gather(1, &labels).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 4.0]);
        let oh = Tensor::from_slice(&[1u32, 0, 3], &[3], &dev).unwrap().one_hot(4, DType::F32).unwrap();
        assert_eq!(oh.to_vec::<f32>().unwrap(), vec![0., 1., 0., 0., 1., 0., 0., 0., 0., 0., 0., 1.]);
        // indices computed on the device (argmax) carry their bound
        let am = x.argmax(1, true).unwrap();
        assert_eq!(x.gather(1, &am).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 6.0]);
        // indices from a float conversion have no known bound: checked by value
        let conv = Tensor::from_slice(&[1.0f32, 2.0], &[2, 1], &dev).unwrap().to_dtype(DType::U32).unwrap();
        assert_eq!(x.gather(1, &conv).unwrap().to_vec::<f32>().unwrap(), vec![2.0, 6.0]);
    }
    with_gpu!(g);
    let (r, d) = pair(&[50, 70], -1.0, 1.0, &g);
    let ids: Vec<u32> = rand_vec(90, 0.0, 69.99).into_iter().map(|v| v as u32).collect();
    let (ig, ic) = (Tensor::from_slice(&ids, &[90], &g).unwrap(), Tensor::from_slice(&ids, &[90], &cpu()).unwrap());
    assert_close(
        &d.t().unwrap().index_select(0, &ig).unwrap(),
        &rounded(&r).t().unwrap().index_select(0, &ic).unwrap(),
        0.0,
        0.0,
        "index_select of a transpose",
    );
}

#[test]
fn conversions_round_trip() {
    with_gpu!(g);
    let v = vec![0.5f32, 1.5, 2.0, 7.9];
    let x = Tensor::from_slice(&v, &[4], &g).unwrap();
    assert_eq!(x.to_dtype(DType::U32).unwrap().to_vec::<u32>().unwrap(), vec![0, 1, 2, 7]);
    assert_eq!(
        x.to_device(&cpu()).unwrap().to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap(),
        vec![0.5, 1.5, 2.0, 7.900000095367432]
    );
    let u = Tensor::from_slice(&[3u32, 9], &[2], &g).unwrap();
    assert_eq!(u.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 9.0]);
    let r = Tensor::randn(&[3, 3], 7, &g).unwrap();
    let rc = Tensor::randn(&[3, 3], 7, &cpu()).unwrap();
    // the same Philox words; log and cos may differ in the last bits between WGSL and Rust
    let (r, rc) = (r.to_vec::<f64>().unwrap(), rc.to_vec::<f64>().unwrap());
    assert!(r.iter().zip(&rc).all(|(a, b)| close(*a, *b, 1e-5, 1e-6)), "seeded randn on both devices: {r:?} vs {rc:?}");
}
