// In-place SGD step (PyTorch semantics; the update is sgd_update in optim_update.wgsl).
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
    let h = sgd_hyper();
    let span = stride_range(wid, nwg, lid, items());
    for (var i = span.x; i < span.y; i = i + span.z) {
        let r = sgd_update(weights[i], grad[i], velocity[i], h);
        if (h.momentum != T(0)) {
            velocity[i] = r.velocity;
        }
        weights[i] = r.w;
    }
}
