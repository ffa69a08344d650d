// Shared by the matmul kernels (which declare `params`).
// params: [M, N, K, batch_rank, batch_base, a_off, a_rs, a_cs, b_off, b_rs, b_cs, 0,
//          batch_shape[6] @12, a_batch_strides[6] @18, b_batch_strides[6] @24]

// Offsets of batch `batch`'s A and B matrices (batch dims broadcast by stride 0).
fn batch_bases(batch: u32) -> vec2<u32> {
    var a_base = param(5);
    var b_base = param(8);
    var rem = batch;
    var d = param(3);
    loop {
        if (d == 0u) { break; }
        d = d - 1u;
        let size = param(12u + d);
        let idx = rem % size;
        rem = rem / size;
        a_base = a_base + idx * param(18u + d);
        b_base = b_base + idx * param(24u + d);
    }
    return vec2<u32>(a_base, b_base);
}
