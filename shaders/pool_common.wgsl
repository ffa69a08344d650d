// Shared by the pooling kernels (params [numel_out, C, OH, OW, k, x_off, xs_b, xs_c,
// xs_h, xs_w, ...]).

// Offset in x of the top-left element of output o's window.
fn pool_window_base(o: u32) -> u32 {
    let C = param(1);
    let OH = param(2);
    let OW = param(3);
    let k = param(4);
    let ow = o % OW;
    let oh = (o / OW) % OH;
    let c = (o / (OW * OH)) % C;
    let b = o / (OW * OH * C);
    return param(5) + b * param(6) + c * param(7) + oh * k * param(8) + ow * k * param(9);
}
