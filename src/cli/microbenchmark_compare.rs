//! `oxray microbenchmark --compare FILE`: Ray's `ray microbenchmark` figures
//! from a run made right before this one (`scripts/peers/ray_microbenchmark.sh`
//! writes the file), set beside oxray's metric by metric with the ratio.
//! Figures from an earlier day are not comparable (the same machine kind ran
//! Ray 2-2.7x slower from one day to the next), hence a file per run rather
//! than a table in the code.
//!
//! The file is tab-separated text, one metric a line: Ray's metric name, the
//! mean in operations per second and the standard deviation, as Ray prints
//! them (`<name> per second <mean> +- <sd>`). Blank lines and lines starting
//! with `#` (the script records Ray's version and the date there) are skipped.

use std::path::{Path, PathBuf};

/// One metric's figure: mean and standard deviation of operations per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    pub mean: f64,
    pub sd: f64,
}

/// Why a figures file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FiguresFileError {
    #[error("cannot read Ray's figures file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "Ray's figures file {path}, line {line}: {problem} \
         (expected METRIC<TAB>MEAN<TAB>SD, as scripts/peers/ray_microbenchmark.sh writes)"
    )]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("Ray's figures file {path} holds no metric")]
    Empty { path: PathBuf },
}

/// Ray's figures read from a file, in the file's order.
#[derive(Debug)]
pub struct RayFigures {
    path: PathBuf,
    figures: Vec<(String, Figure)>,
}

impl RayFigures {
    pub fn read(path: &Path) -> Result<Self, FiguresFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FiguresFileError::Read {
            path: path.to_path_buf(),
            error: source,
        })?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, FiguresFileError> {
        let mut figures: Vec<(String, Figure)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_error = |problem: String| FiguresFileError::Line {
                path: path.to_path_buf(),
                line: index + 1,
                problem,
            };
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let [name, mean, sd] = fields[..] else {
                return Err(line_error(format!(
                    "{} tab-separated fields, not 3",
                    fields.len()
                )));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(line_error("the metric name is empty".into()));
            }
            if figures.iter().any(|(known, _)| known == name) {
                return Err(line_error(format!("metric {name:?} appears twice")));
            }
            let number = |what: &str, text: &str, positive: bool| {
                let value: f64 = text
                    .trim()
                    .parse()
                    .map_err(|_| line_error(format!("the {what} {text:?} is not a number")))?;
                let valid = value.is_finite() && if positive { value > 0.0 } else { value >= 0.0 };
                if valid {
                    Ok(value)
                } else {
                    let bound = if positive { "above 0" } else { "0 or more" };
                    Err(line_error(format!("the {what} {text:?} is not {bound}")))
                }
            };
            let figure = Figure {
                mean: number("mean", mean, true)?,
                sd: number("standard deviation", sd, false)?,
            };
            figures.push((name.to_string(), figure));
        }
        if figures.is_empty() {
            return Err(FiguresFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(RayFigures {
            path: path.to_path_buf(),
            figures,
        })
    }

    fn get(&self, name: &str) -> Option<Figure> {
        self.figures
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, figure)| *figure)
    }

    /// Prints oxray's figures (`measured`, labelled with the mode they ran
    /// in) beside Ray's with the ratio, then the metrics only one side has.
    pub fn print_comparison(&self, mode: &str, measured: &[(&str, Figure)]) {
        println!();
        println!(
            "oxray ({mode}) beside Ray's figures from {}:",
            self.path.display()
        );
        println!(
            "{:<46} {:>28} {:>24} {:>10}",
            "metric", "oxray", "Ray", "oxray/Ray"
        );
        let both = measured
            .iter()
            .filter_map(|(name, ours)| Some((name, ours, self.get(name)?)));
        for (name, ours, ray) in both {
            println!(
                "{name:<46} {:>28} {:>24} {:>9.2}x",
                format!("{:.2} +- {:.2}", ours.mean, ours.sd),
                format!("{:.2} +- {:.2}", ray.mean, ray.sd),
                ours.mean / ray.mean
            );
        }
        let only_oxray: Vec<&str> = measured
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| self.get(name).is_none())
            .collect();
        let only_ray: Vec<&str> = self
            .figures
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| !measured.iter().any(|(ours, _)| ours == name))
            .collect();
        if !only_oxray.is_empty() {
            println!("measured by oxray only: {}", only_oxray.join("; "));
        }
        if !only_ray.is_empty() {
            println!("in Ray's file only: {}", only_ray.join("; "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RayFigures, FiguresFileError> {
        RayFigures::parse(Path::new("ray.tsv"), text)
    }

    #[test]
    fn reads_figures_skipping_comments_and_blank_lines() {
        let figures = parse("# ray 2.60.0\n\n1:1 actor calls sync\t425.5\t12\n").unwrap();
        assert_eq!(
            figures.get("1:1 actor calls sync"),
            Some(Figure {
                mean: 425.5,
                sd: 12.0
            })
        );
        assert_eq!(figures.get("1:1 actor calls async"), None);
    }

    #[test]
    fn names_the_line_and_problem_of_a_malformed_file() {
        let cases = [
            ("a\t1\n", "line 1: 2 tab-separated fields"),
            (
                "# x\na\tmany\t1\n",
                "line 2: the mean \"many\" is not a number",
            ),
            ("a\t0\t1\n", "the mean \"0\" is not above 0"),
            (
                "a\t1\t-1\n",
                "the standard deviation \"-1\" is not 0 or more",
            ),
            ("a\t1\t1\na\t2\t1\n", "line 2: metric \"a\" appears twice"),
            ("\t1\t1\n", "the metric name is empty"),
            ("# only a comment\n", "holds no metric"),
        ];
        for (text, expected) in cases {
            let message = parse(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?}: {message}");
        }
    }
}
