// Batched C[b] = A[b] @ B[b] for strided A [.., M, K] and B [.., K, N] (transposed views
// need no copy: only the strides differ), C contiguous [batch, M, N].
// Tiles of 64x64 outputs per workgroup staged through workgroup memory in K-steps of 16;
// each of the 16x16 threads accumulates a 4x4 register block.
// params: MatmulParams (see matmul_common.wgsl)
// bindings: a and b, then c and the params (standalone) or a fused epilogue's outputs

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> a_tile: array<T, 1024>; // [BK][BM]
var<workgroup> b_tile: array<T, 1024>; // [BK][BN]

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let M = p_m();
    let N = p_n();
    let K = p_k();
    let batch = wid.z + p_batch_base();
    let bases = batch_bases(batch);
    let a_base = bases.x;
    let b_base = bases.y;
    let a_rs = p_a_rs();
    let a_cs = p_a_cs();
    let b_rs = p_b_rs();
    let b_cs = p_b_cs();
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    // The 4x4 block lives in four vec4 rows and the loops over it are unrolled by hand:
    // faster everywhere, and it keeps each invocation far below lavapipe's cap of 65,535
    // loop iterations (only the K loops remain: about 17 iterations per 16 of K).
    var acc0 = vec4<T>(T(0));
    var acc1 = vec4<T>(T(0));
    var acc2 = vec4<T>(T(0));
    var acc3 = vec4<T>(T(0));
    let ty4 = lid3.y * 4u;
    let tx4 = lid3.x * 4u;
    for (var k0 = 0u; k0 < K; k0 = k0 + BK) {
        load_tiles(lid, row0, col0, k0, M, N, K, a_base, a_rs, a_cs, b_base, b_rs, b_cs);
        load_tiles(lid + 256u, row0, col0, k0, M, N, K, a_base, a_rs, a_cs, b_base, b_rs, b_cs);
        load_tiles(lid + 512u, row0, col0, k0, M, N, K, a_base, a_rs, a_cs, b_base, b_rs, b_cs);
        load_tiles(lid + 768u, row0, col0, k0, M, N, K, a_base, a_rs, a_cs, b_base, b_rs, b_cs);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            let ao = kk * BM + ty4;
            let bo = kk * BN + tx4;
            let bv = vec4<T>(b_tile[bo], b_tile[bo + 1u], b_tile[bo + 2u], b_tile[bo + 3u]);
            acc0 = acc0 + a_tile[ao] * bv;
            acc1 = acc1 + a_tile[ao + 1u] * bv;
            acc2 = acc2 + a_tile[ao + 2u] * bv;
            acc3 = acc3 + a_tile[ao + 3u] * bv;
        }
        workgroupBarrier();
    }
    let c_base = batch * M * N;
    store_row(c_base, row0 + ty4, col0 + tx4, M, N, acc0);
    store_row(c_base, row0 + ty4 + 1u, col0 + tx4, M, N, acc1);
    store_row(c_base, row0 + ty4 + 2u, col0 + tx4, M, N, acc2);
    store_row(c_base, row0 + ty4 + 3u, col0 + tx4, M, N, acc3);
}

// Element e (0..1024) of each tile: A tile [BK][BM] and B tile [BK][BN], zero-padded.
fn load_tiles(e: u32, row0: u32, col0: u32, k0: u32, M: u32, N: u32, K: u32,
              a_base: u32, a_rs: u32, a_cs: u32, b_base: u32, b_rs: u32, b_cs: u32) {
    let am = e / BK;
    let ak = e % BK;
    var av = T(0);
    if (row0 + am < M && k0 + ak < K) {
        av = a[a_base + (row0 + am) * a_rs + (k0 + ak) * a_cs];
    }
    a_tile[ak * BM + am] = av;
    let bk = e / BN;
    let bn = e % BN;
    var bv = T(0);
    if (k0 + bk < K && col0 + bn < N) {
        bv = b[b_base + (k0 + bk) * b_rs + (col0 + bn) * b_cs];
    }
    b_tile[bk * BN + bn] = bv;
}
