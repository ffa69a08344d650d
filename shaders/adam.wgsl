// In-place Adam / AdamW step. Adam adds wd p to the gradient; AdamW (decoupled = 1)
// decays the parameter directly: p = p - lr wd p.
// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p = p - lr (m / bc1) / (sqrt(v / bc2) + eps)
// params: [numel, lr, b1, b2, eps, weight_decay, bc1, bc2, decoupled] (f32 bits, decoupled u32)
@group(0) @binding(0) var<storage, read> grad: array<T>;
@group(0) @binding(1) var<storage, read_write> param: array<T>;
@group(0) @binding(2) var<storage, read_write> m: array<T>;
@group(0) @binding(3) var<storage, read_write> v: array<T>;
@group(0) @binding(4) var<storage, read> params: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= params[0]) { return; }
    let lr = T(bitcast<f32>(params[1]));
    let b1 = T(bitcast<f32>(params[2]));
    let b2 = T(bitcast<f32>(params[3]));
    let eps = T(bitcast<f32>(params[4]));
    let wd = T(bitcast<f32>(params[5]));
    let bc1 = T(bitcast<f32>(params[6]));
    let bc2 = T(bitcast<f32>(params[7]));
    var p = param[i];
    var g = grad[i];
    if (params[8] == 1u) {
        p = p - lr * wd * p;
    } else {
        g = g + wd * p;
    }
    let mi = b1 * m[i] + (T(1) - b1) * g;
    let vi = b2 * v[i] + (T(1) - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = p - lr * (mi / bc1) / (sqrt(vi / bc2) + eps);
}
