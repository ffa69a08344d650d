//! The DOM side of the page: text, fetches, and the two canvases' plots.
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{CanvasRenderingContext2d, Document, HtmlCanvasElement};

fn document() -> Result<Document, JsValue> {
    web_sys::window().and_then(|w| w.document()).ok_or_else(|| JsValue::from_str("no document"))
}

/// Set the text of the element with `id` (absent elements are skipped).
pub fn set_text(id: &str, text: &str) {
    if let Some(e) = document().ok().and_then(|d| d.get_element_by_id(id)) {
        e.set_text_content(Some(text));
    }
}

/// Set the HTML of the element with `id`.
pub fn set_html(id: &str, html: &str) {
    if let Some(e) = document().ok().and_then(|d| d.get_element_by_id(id)) {
        e.set_inner_html(html);
    }
}

/// The bytes at `url`, relative to the page.
pub async fn fetch_bytes(url: &str) -> Result<Vec<u8>, JsValue> {
    let window = web_sys::window().ok_or_else(|| JsValue::from_str("no window"))?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str(url)).await?.dyn_into()?;
    if !response.ok() {
        return Err(JsValue::from_str(&format!("{url}: HTTP {}", response.status())));
    }
    let buffer = JsFuture::from(response.array_buffer()?).await?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// A line plot of `points` in a canvas, with its title and the y range in the corner.
pub fn plot(canvas_id: &str, title: &str, points: &[(f64, f64)], y_range: Option<(f64, f64)>) -> Result<(), JsValue> {
    let canvas: HtmlCanvasElement = document()?
        .get_element_by_id(canvas_id)
        .ok_or_else(|| JsValue::from_str(&format!("no canvas #{canvas_id}")))?
        .dyn_into()?;
    let ctx: CanvasRenderingContext2d =
        canvas.get_context("2d")?.ok_or_else(|| JsValue::from_str("no 2d context"))?.dyn_into()?;
    let (w, h) = (canvas.width() as f64, canvas.height() as f64);
    let (left, right, top, bottom) = (48.0, 12.0, 28.0, 24.0);
    ctx.set_fill_style_str("#fff");
    ctx.fill_rect(0.0, 0.0, w, h);
    ctx.set_stroke_style_str("#999");
    ctx.stroke_rect(left, top, w - left - right, h - top - bottom);
    ctx.set_fill_style_str("#222");
    ctx.set_font("14px sans-serif");
    ctx.fill_text(title, left, 18.0)?;
    if points.is_empty() {
        return Ok(());
    }
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let (y_min, y_max) = y_range.unwrap_or_else(|| {
        let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        (lo.min(0.0), if hi > lo { hi } else { lo + 1.0 })
    });
    ctx.set_font("11px sans-serif");
    ctx.fill_text(&format!("{y_max:.2}"), 4.0, top + 10.0)?;
    ctx.fill_text(&format!("{y_min:.2}"), 4.0, h - bottom)?;
    ctx.fill_text(&format!("{x_max:.0}"), w - right - 30.0, h - 6.0)?;
    let to_x = |x: f64| left + x / x_max * (w - left - right);
    let to_y = |y: f64| top + (1.0 - (y - y_min) / (y_max - y_min)) * (h - top - bottom);
    ctx.set_stroke_style_str("#1565c0");
    ctx.set_line_width(2.0);
    ctx.begin_path();
    for (i, &(x, y)) in points.iter().enumerate() {
        if i == 0 {
            ctx.move_to(to_x(x), to_y(y));
        } else {
            ctx.line_to(to_x(x), to_y(y));
        }
    }
    ctx.stroke();
    ctx.set_fill_style_str("#1565c0");
    for &(x, y) in points {
        ctx.fill_rect(to_x(x) - 2.0, to_y(y) - 2.0, 4.0, 4.0);
    }
    Ok(())
}

/// Two 3x3 matrices side by side as HTML tables, with their largest difference.
pub fn matrices_html(left: (&str, &[[f64; 3]; 3]), right: (&str, &[[f64; 3]; 3]), diff: f64) -> String {
    let table = |(title, m): (&str, &[[f64; 3]; 3])| {
        let rows: String = m
            .iter()
            .map(|r| format!("<tr>{}</tr>", r.iter().map(|v| format!("<td>{v:+.5}</td>")).collect::<String>()))
            .collect();
        format!("<figure><figcaption>{title}</figcaption><table>{rows}</table></figure>")
    };
    format!("<div class=\"pair\">{}{}</div><p>largest difference: {diff:.2e}</p>", table(left), table(right))
}
