//! Line plots with titled axes, tick labels, a legend and each curve's final value,
//! rendered to PNG without system libraries: plotters' ab_glyph text with the DejaVu Sans
//! font shipped in `examples/fonts/` (license beside it).
// shared by several examples, each using a part
#![allow(dead_code)]
use plotters::prelude::*;

const FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
const COLORS: [RGBColor; 4] = [RGBColor(214, 39, 40), RGBColor(31, 119, 180), RGBColor(44, 160, 44), BLACK];

/// One chart: curves of (x, y) points.
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Register the font once per process (plotters keeps a global font table).
fn register() -> Result<(), Box<dyn std::error::Error>> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        res = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| "the shipped font does not parse".to_string());
    });
    Ok(res?)
}

impl Plot {
    /// The bounds of all points, padded.
    fn ranges(&self) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
        let pts = self.series.iter().flat_map(|(_, p)| p.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            return (0.0..1.0, 0.0..1.0);
        }
        let pad = ((y1 - y0) * 0.08).max(1e-3);
        (x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
    }

    /// Draw into `area`.
    pub fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> Result<(), Box<dyn std::error::Error>>
    where
        DB::ErrorType: 'static,
    {
        register()?;
        let (xr, yr) = self.ranges();
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(xr, yr)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .x_label_formatter(&|x| if x.fract() == 0.0 { format!("{x:.0}") } else { format!("{x}") })
            .y_desc(&self.y_label)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for (i, (name, pts)) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let label = match pts.last() {
                Some(&(_, y)) => format!("{name} (final {y:.4})"),
                None => name.clone(),
            };
            chart
                .draw_series(LineSeries::new(pts.iter().cloned(), color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }

    /// A 800 x 500 PNG of this plot.
    pub fn write(&self, path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
        write_row(path, std::slice::from_ref(self))
    }
}

/// Plots side by side in one PNG (each 800 x 500).
pub fn write_row(path: &std::path::Path, plots: &[Plot]) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (800 * plots.len().max(1) as u32, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    for (plot, area) in plots.iter().zip(root.split_evenly((1, plots.len().max(1)))) {
        plot.draw(&area)?;
    }
    root.present()?;
    Ok(())
}
