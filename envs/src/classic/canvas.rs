//! A minimal software rasterizer for the classic-control `render`s: filled
//! polygons and circles on a white RGB canvas, in world-style coordinates
//! with y pointing up, as Gymnasium draws before flipping its surface.
//! No anti-aliasing: frames are for looking at, not pixel-compared.

use crate::env::RgbImage;

pub(super) type Color = [u8; 3];
pub(super) type Point = (f64, f64);

pub(super) struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    pub(super) fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    /// Fills the polygon (even-odd rule), sampling at pixel centres.
    pub(super) fn fill_polygon(&mut self, points: &[Point], color: Color) {
        let (low, high) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.1), hi.max(p.1))
            });
        let first_row = low.floor().max(0.0) as usize;
        let last_row = (high.ceil().max(0.0) as usize).min(self.height);
        let mut crossings = Vec::new();
        for row in first_row..last_row {
            let y = row as f64 + 0.5;
            crossings.clear();
            for (i, &(x0, y0)) in points.iter().enumerate() {
                let (x1, y1) = points[(i + 1) % points.len()];
                if (y0 <= y) != (y1 <= y) {
                    crossings.push(x0 + (y - y0) / (y1 - y0) * (x1 - x0));
                }
            }
            crossings.sort_by(f64::total_cmp);
            for span in crossings.chunks_exact(2) {
                let start = (span[0] - 0.5).ceil().max(0.0) as usize;
                let end = ((span[1] - 0.5).floor() + 1.0).clamp(0.0, self.width as f64) as usize;
                for column in start..end {
                    self.put(column, row, color);
                }
            }
        }
    }

    pub(super) fn fill_circle(&mut self, (cx, cy): Point, radius: f64, color: Color) {
        let outline: Vec<Point> = (0..32)
            .map(|i| {
                let angle = i as f64 * std::f64::consts::TAU / 32.0;
                (cx + radius * angle.cos(), cy + radius * angle.sin())
            })
            .collect();
        self.fill_polygon(&outline, color);
    }

    /// A straight stroke of the given width.
    pub(super) fn line(&mut self, from: Point, to: Point, width: f64, color: Color) {
        let (dx, dy) = (to.0 - from.0, to.1 - from.1);
        let length = dx.hypot(dy).max(f64::MIN_POSITIVE);
        let (nx, ny) = (-dy / length * width / 2.0, dx / length * width / 2.0);
        let quad = [
            (from.0 + nx, from.1 + ny),
            (to.0 + nx, to.1 + ny),
            (to.0 - nx, to.1 - ny),
            (from.0 - nx, from.1 - ny),
        ];
        self.fill_polygon(&quad, color);
    }

    fn put(&mut self, column: usize, row: usize, color: Color) {
        let at = (row * self.width + column) * 3;
        self.pixels[at..at + 3].copy_from_slice(&color);
    }

    /// The image with y pointing up (row 0 is the top of the picture).
    pub(super) fn into_image(self) -> RgbImage {
        let row_len = self.width * 3;
        let pixels = self
            .pixels
            .chunks_exact(row_len)
            .rev()
            .flatten()
            .copied()
            .collect();
        RgbImage {
            height: self.height,
            width: self.width,
            pixels,
        }
    }
}

/// `point` rotated by `angle` radians (counter-clockwise) and moved by `offset`.
pub(super) fn place(point: Point, angle: f64, offset: Point) -> Point {
    let (sin, cos) = angle.sin_cos();
    (
        point.0 * cos - point.1 * sin + offset.0,
        point.0 * sin + point.1 * cos + offset.1,
    )
}

/// The corners of the rectangle `[left, right] x [bottom, top]`.
pub(super) fn rectangle(left: f64, right: f64, bottom: f64, top: f64) -> [Point; 4] {
    [(left, bottom), (left, top), (right, top), (right, bottom)]
}
