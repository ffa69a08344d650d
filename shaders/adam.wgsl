// In-place Adam / AdamW step (the update is adam_update in optim_update.wgsl).
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
    let h = adam_hyper(8u);
    let span = stride_range(wid, nwg, lid, items());
    for (var i = span.x; i < span.y; i = i + span.z) {
        let r = adam_update(weights[i], grad[i], m[i], v[i], h);
        m[i] = r.m;
        v[i] = r.v;
        weights[i] = r.w;
    }
}
