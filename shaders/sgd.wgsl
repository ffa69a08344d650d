// In-place SGD step (PyTorch semantics): g = grad + wd p; v = momentum v + g (when
// momentum > 0); p = p - lr v.
// params: [numel, lr, momentum, weight_decay] (f32 bits after numel)
// V (the element: T, or vec4<T>) and items() (their count) come from the kernel's
// variant (KernelKey::source)
@group(0) @binding(0) var<storage, read> grad: array<V>;
@group(0) @binding(1) var<storage, read_write> weights: array<V>;
@group(0) @binding(2) var<storage, read_write> velocity: array<V>;
@group(0) @binding(3) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    // grid-stride (a bounded grid; see Context::grid_stride)
    let n = items();
    let lr = T(bitcast<f32>(param(1)));
    let momentum = T(bitcast<f32>(param(2)));
    let wd = T(bitcast<f32>(param(3)));
    let span = stride_range(wid, nwg, lid, n);
    for (var i = span.x; i < span.y; i = i + span.z) {
        var g = grad[i] + wd * weights[i];
        if (momentum != T(0)) {
            g = momentum * velocity[i] + g;
            velocity[i] = g;
        }
        weights[i] = weights[i] - lr * g;
    }
}
