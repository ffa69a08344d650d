// In-place Adam / AdamW step. Adam adds wd p to the gradient; AdamW (decoupled = 1)
// decays the parameter directly: p = p - lr wd p.
// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p = p - lr (m / bc1) / (sqrt(v / bc2) + eps)
// params: [numel, lr, b1, b2, eps, weight_decay, bc1, bc2, decoupled] (f32 bits, decoupled u32)
// V (the element: T, or vec4<T>) and items() (their count) come from the kernel's
// variant (KernelKey::source)
@group(0) @binding(0) var<storage, read> grad: array<V>;
@group(0) @binding(1) var<storage, read_write> weights: array<V>;
@group(0) @binding(2) var<storage, read_write> m: array<V>;
@group(0) @binding(3) var<storage, read_write> v: array<V>;
@group(0) @binding(4) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    // grid-stride (a bounded grid; see Context::grid_stride)
    let n = items();
    let lr = T(bitcast<f32>(param(1)));
    let b1 = T(bitcast<f32>(param(2)));
    let b2 = T(bitcast<f32>(param(3)));
    let eps = T(bitcast<f32>(param(4)));
    let wd = T(bitcast<f32>(param(5)));
    let bc1 = T(bitcast<f32>(param(6)));
    let bc2 = T(bitcast<f32>(param(7)));
    let span = stride_range(wid, nwg, lid, n);
    for (var i = span.x; i < span.y; i = i + span.z) {
        var p = weights[i];
        var g = grad[i];
        if (param(8) == 1u) {
            p = p - lr * wd * p;
        } else {
            g = g + wd * p;
        }
        let mi = b1 * m[i] + (T(1) - b1) * g;
        let vi = b2 * v[i] + (T(1) - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        weights[i] = p - lr * (mi / bc1) / (sqrt(vi / bc2) + eps);
    }
}
