//! Line plots over time as SVG, shared by the play simulator ([`crate::play::plot`]) and the load
//! generator's `--plot`: panels stacked vertically, each with its series, a legend when they are
//! labelled and vertical markers (e.g. the end of the warm-up).

use plotters::prelude::*;

/// One line of a panel.
pub struct Series {
    /// Shown in the panel's legend; empty for none.
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// One chart: a caption, axis descriptions, its series and markers.
pub struct Panel {
    pub caption: String,
    pub x_desc: String,
    pub y_desc: String,
    /// The y axis; `None`: from 0 to 1.1 × the largest value (at least 1).
    pub y_range: Option<(f64, f64)>,
    /// Height in pixels.
    pub height: u32,
    pub series: Vec<Series>,
    /// Vertical lines at these x, with a legend entry when labelled.
    pub markers: Vec<(f64, String)>,
    pub legend: SeriesLabelPosition,
}

impl Panel {
    pub fn new(caption: impl Into<String>, x_desc: &str, y_desc: &str, height: u32) -> Panel {
        Panel {
            caption: caption.into(),
            x_desc: x_desc.to_owned(),
            y_desc: y_desc.to_owned(),
            y_range: None,
            height,
            series: Vec::new(),
            markers: Vec::new(),
            legend: SeriesLabelPosition::UpperRight,
        }
    }

    pub fn series(
        mut self,
        label: impl Into<String>,
        color: RGBColor,
        points: Vec<(f64, f64)>,
    ) -> Panel {
        self.series.push(Series {
            label: label.into(),
            color,
            points,
        });
        self
    }
}

/// Colours for series in order.
pub const PALETTE: [RGBColor; 6] = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];

/// Draws `panels` top to bottom, `width` pixels wide, x from 0 to `x_end`, into the SVG `path`.
pub fn panels(
    path: &std::path::Path,
    width: u32,
    x_end: f64,
    panels: &[Panel],
) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plotting {}: {e}", path.display());
    let height: u32 = panels.iter().map(|p| p.height).sum();
    let root = SVGBackend::new(path, (width, height.max(1))).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut rest = root.clone();
    for panel in panels {
        let (area, below) = rest.split_vertically(panel.height);
        rest = below;
        let (y0, y1) = panel.y_range.unwrap_or_else(|| {
            let max = panel
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .fold(1.0f64, f64::max);
            (0.0, max * 1.1)
        });
        let mut chart = ChartBuilder::on(&area)
            .caption(&panel.caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..x_end.max(1.0), y0..y1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(panel.x_desc.as_str())
            .y_desc(panel.y_desc.as_str())
            .draw()
            .map_err(|e| err(&e))?;
        let mut labelled = false;
        for s in &panel.series {
            let color = s.color;
            let drawn = chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| err(&e))?;
            if !s.label.is_empty() {
                labelled = true;
                drawn.label(s.label.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            }
        }
        for (x, label) in &panel.markers {
            let drawn = chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(*x, y0), (*x, y1)],
                    BLACK.mix(0.4),
                )))
                .map_err(|e| err(&e))?;
            if !label.is_empty() {
                labelled = true;
                drawn
                    .label(label.as_str())
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
            }
        }
        if labelled {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(panel.legend.clone())
                .draw()
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
