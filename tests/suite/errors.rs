//! Bad input returns a typed error naming the op, and leaves everything usable.
use crate::common::*;
use wgrad::{DType, Device, Error, Tensor};

fn all_errors(dev: &Device) {
    let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], dev).unwrap();
    let b = Tensor::ones(&[4, 2], DType::F32, dev).unwrap();
    let err = |r: wgrad::Result<Tensor>| r.expect_err("must be an error");
    assert!(matches!(err(a.matmul(&b)), Error::ShapeMismatch { op: "matmul", .. }));
    let e = err(Tensor::ones(&[2, 2, 3], DType::F32, dev)
        .unwrap()
        .matmul(&Tensor::ones(&[3, 3, 1], DType::F32, dev).unwrap()));
    assert!(matches!(e, Error::Broadcast { op: "matmul", .. }), "{e}");
    assert!(matches!(err(a.add(&b)), Error::Broadcast { op: "add", .. }));
    assert!(err(a.add(&b)).to_string().contains("[2, 3]"));
    assert!(matches!(err(a.reshape(&[4, 2])), Error::ElementCount { op: "reshape", .. }));
    assert!(matches!(err(a.sum(&[2], false)), Error::AxisOutOfRange { op: "sum", axis: 2, rank: 2 }));
    assert!(matches!(err(a.transpose(0, -3)), Error::AxisOutOfRange { .. }));
    assert!(matches!(
        err(Tensor::from_slice(&[1.0f32; 5], &[2, 3], dev)),
        Error::ElementCount { op: "from_slice", .. }
    ));
    assert!(matches!(err(a.narrow(1, 2, 2)), Error::SliceOutOfRange { op: "narrow", .. }));
    assert!(matches!(err(Tensor::cat(&[], 0)), Error::Empty { op: "cat", .. }));
    assert!(matches!(err(Tensor::stack(&[], 0)), Error::Empty { op: "stack", .. }));
    assert!(matches!(err(Tensor::cat(&[a.clone(), b.clone()], 0)), Error::ShapeMismatch { op: "cat", .. }));
    let empty = Tensor::zeros(&[3, 0], DType::F32, dev).unwrap();
    assert!(matches!(err(empty.max(&[1], false)), Error::Empty { op: "max", .. }));
    assert!(matches!(err(empty.argmax(1, false)), Error::Empty { op: "argmax", .. }));
    let bad = Tensor::from_slice(&[0u32, 3], &[2], dev).unwrap();
    assert!(matches!(err(a.index_select(1, &bad)), Error::IndexOutOfRange { op: "index_select", index: 3, size: 3 }));
    let bad2 = Tensor::from_slice(&[0u32, 5], &[2, 1], dev).unwrap();
    assert!(matches!(err(a.gather(1, &bad2)), Error::IndexOutOfRange { op: "gather", .. }));
    assert!(matches!(err(bad.one_hot(3, DType::F32)), Error::IndexOutOfRange { op: "one_hot", .. }));
    let unknown = Tensor::from_slice(&[9.0f32, 0.0], &[2, 1], dev).unwrap().to_dtype(DType::U32).unwrap();
    assert!(matches!(err(a.gather(1, &unknown)), Error::IndexOutOfRange { op: "gather", index: 9, .. }));
    let labels = Tensor::from_slice(&[1u32, 2], &[2], dev).unwrap();
    assert!(matches!(
        err(a.add(labels.to_dtype(DType::F32).unwrap().to_dtype(DType::U32).unwrap())),
        Error::DTypeMismatch { .. }
    ));
    assert!(matches!(a.to_vec::<u32>(), Err(Error::DTypeMismatch { op: "to_vec", .. })));
    match a.to_scalar::<f32>() {
        Err(Error::NotScalar { op: "to_scalar", shape, .. }) => assert_eq!(shape, vec![2, 3]),
        other => panic!("want NotScalar, got {other:?}"),
    }
    // earlier tensors are intact and the device still works
    assert_eq!(a.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(a.sum_all().unwrap().to_scalar::<f32>().unwrap(), 21.0);
}

#[test]
fn bad_input_gives_typed_errors_and_keeps_the_device_usable() {
    all_errors(&cpu());
    with_gpu!(g);
    all_errors(&g);
}

#[test]
fn mixed_devices_and_unsupported_dtypes_are_errors() {
    let c = Tensor::ones(&[2], DType::F32, &cpu()).unwrap();
    let c64 = Tensor::ones(&[2], DType::F64, &cpu()).unwrap();
    assert!(matches!(c.add(&c64), Err(Error::DTypeMismatch { op: "add", .. })));
    with_gpu!(g);
    let a = Tensor::ones(&[2], DType::F32, &g).unwrap();
    assert!(matches!(a.add(&c), Err(Error::DeviceMismatch { op: "add", .. })));
    assert!(matches!(a.matmul(&c), Err(Error::DeviceMismatch { op: "matmul", .. })));
    let e = Tensor::ones(&[2], DType::F64, &g).unwrap_err();
    assert!(matches!(e, Error::UnsupportedDType { dtype: DType::F64, .. }), "{e}");
    let e = c64.to_device(&g).unwrap_err();
    assert!(matches!(e, Error::UnsupportedDType { dtype: DType::F64, .. }), "{e}");
    assert_eq!(a.add(&a).unwrap().to_vec::<f32>().unwrap(), vec![2.0, 2.0]);
}

#[test]
fn a_tensor_over_the_buffer_limit_is_an_error_naming_the_limit() {
    with_gpu!(g);
    let limit = g.context().unwrap().limits().max_storage_buffer_binding_size as usize;
    let n = limit / 4 + 1024;
    let e = Tensor::zeros(&[n], DType::F32, &g).unwrap_err();
    assert!(e.to_string().contains("max_storage_buffer_binding_size"), "{e}");
    assert_eq!(Tensor::ones(&[3], DType::F32, &g).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 3.0);
}
