// Shared by the pooling kernels (params [numel_out, C, OH, OW, k, x_off, xs_b, xs_c,
// xs_h, xs_w, ...]).

// Offset in x of the top-left element of output o's window.
fn pool_window_base(o: u32) -> u32 {
    let C = p_channels();
    let OH = p_out_h();
    let OW = p_out_w();
    let k = p_k();
    let ow = o % OW;
    let oh = (o / OW) % OH;
    let c = (o / (OW * OH)) % C;
    let b = o / (OW * OH * C);
    return p_x_off() + b * p_x_strides(0u) + c * p_x_strides(1u) + oh * k * p_x_strides(2u) + ow * k * p_x_strides(3u);
}
