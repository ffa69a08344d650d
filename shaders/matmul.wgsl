// Batched C[b] = A[b] @ B[b] for strided A [.., M, K] and B [.., K, N] (transposed views
// need no copy: only the strides differ), C contiguous [batch, M, N].
// Tiles of 64x64 outputs per workgroup staged through workgroup memory in K-steps of 16;
// each of the 16x16 threads accumulates a 4x4 register block.
// params: [M, N, K, batch_rank, batch_base, a_off, a_rs, a_cs, b_off, b_rs, b_cs, 0,
//          batch_shape[6] @12, a_batch_strides[6] @18, b_batch_strides[6] @24]
@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> b: array<T>;
@group(0) @binding(2) var<storage, read_write> c: array<T>;
@group(0) @binding(3) var<storage, read> params: array<u32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> a_tile: array<T, 1024>; // [BK][BM]
var<workgroup> b_tile: array<T, 1024>; // [BK][BN]

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let M = params[0];
    let N = params[1];
    let K = params[2];
    let batch = wid.z + params[4];
    var a_base = params[5];
    var b_base = params[8];
    var rem = batch;
    var d = params[3];
    loop {
        if (d == 0u) { break; }
        d = d - 1u;
        let size = params[12u + d];
        let idx = rem % size;
        rem = rem / size;
        a_base = a_base + idx * params[18u + d];
        b_base = b_base + idx * params[24u + d];
    }
    let a_rs = params[6];
    let a_cs = params[7];
    let b_rs = params[9];
    let b_cs = params[10];
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    var acc: array<T, 16>;
    for (var i = 0u; i < 16u; i = i + 1u) { acc[i] = T(0); }

    for (var k0 = 0u; k0 < K; k0 = k0 + BK) {
        for (var l = 0u; l < 4u; l = l + 1u) {
            let e = lid + l * 256u;
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
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            var ar: array<T, 4>;
            var br: array<T, 4>;
            for (var i = 0u; i < 4u; i = i + 1u) {
                ar[i] = a_tile[kk * BM + lid3.y * 4u + i];
                br[i] = b_tile[kk * BN + lid3.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i = i + 1u) {
                for (var j = 0u; j < 4u; j = j + 1u) {
                    acc[i * 4u + j] = acc[i * 4u + j] + ar[i] * br[j];
                }
            }
        }
        workgroupBarrier();
    }
    let c_base = batch * M * N;
    for (var i = 0u; i < 4u; i = i + 1u) {
        let r = row0 + lid3.y * 4u + i;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let col = col0 + lid3.x * 4u + j;
            if (r < M && col < N) { c[c_base + r * N + col] = acc[i * 4u + j]; }
        }
    }
}
