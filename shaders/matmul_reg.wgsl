// Batched matmul without workgroup memory or barriers, for adapters that are CPUs
// (lavapipe): there, workgroup barriers are expensive and "global" reads hit the CPU's
// caches, so each invocation accumulates a 4x4 register block straight from A and B.
// Same params and bindings as matmul.wgsl; workgroup 8x8 covers a 32x32 output tile.
@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> b: array<T>;
@group(0) @binding(2) var<storage, read_write> c: array<T>;
@group(0) @binding(3) var<storage, read> params: array<u32>;

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let M = params[0];
    let N = params[1];
    let K = params[2];
    let batch = wid.z + params[4];
    let bases = batch_bases(batch);
    let a_base = bases.x;
    let b_base = bases.y;
    let a_rs = params[6];
    let a_cs = params[7];
    let b_rs = params[9];
    let b_cs = params[10];
    let r0 = (wid.y * 8u + lid3.y) * 4u;
    let c0 = (wid.x * 8u + lid3.x) * 4u;
    if (r0 >= M || c0 >= N) { return; }
    // clamp the rows / columns read past the edge (their results are not stored)
    let ra0 = a_base + min(r0, M - 1u) * a_rs;
    let ra1 = a_base + min(r0 + 1u, M - 1u) * a_rs;
    let ra2 = a_base + min(r0 + 2u, M - 1u) * a_rs;
    let ra3 = a_base + min(r0 + 3u, M - 1u) * a_rs;
    let cb0 = b_base + min(c0, N - 1u) * b_cs;
    let cb1 = b_base + min(c0 + 1u, N - 1u) * b_cs;
    let cb2 = b_base + min(c0 + 2u, N - 1u) * b_cs;
    let cb3 = b_base + min(c0 + 3u, N - 1u) * b_cs;
    var acc0 = vec4<T>(T(0));
    var acc1 = vec4<T>(T(0));
    var acc2 = vec4<T>(T(0));
    var acc3 = vec4<T>(T(0));
    for (var k = 0u; k < K; k = k + 1u) {
        let kb = k * b_rs;
        let bv = vec4<T>(b[cb0 + kb], b[cb1 + kb], b[cb2 + kb], b[cb3 + kb]);
        let ka = k * a_cs;
        acc0 = acc0 + a[ra0 + ka] * bv;
        acc1 = acc1 + a[ra1 + ka] * bv;
        acc2 = acc2 + a[ra2 + ka] * bv;
        acc3 = acc3 + a[ra3 + ka] * bv;
    }
    let c_base = batch * M * N;
    store_row(c_base, r0, c0, M, N, acc0);
    store_row(c_base, r0 + 1u, c0, M, N, acc1);
    store_row(c_base, r0 + 2u, c0, M, N, acc2);
    store_row(c_base, r0 + 3u, c0, M, N, acc3);
}
