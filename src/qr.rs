//! QR code images of a link's `short_url`: options parsed from text, the
//! scannability rules, and SVG or PNG rendering. Pure: no HTTP, no store, so
//! the API and the command line render byte-identical codes.
//!
//! The modules are drawn here rather than by the `qrcode` crate's renderers,
//! because those always draw a 4-module quiet zone and cannot honour
//! `margin` or an exact image `size`.

use std::fmt::Write as _;

use qrcode::{Color, EcLevel, QrCode};
use sha2::{Digest, Sha256};

pub const SIZE_MIN: u32 = 64;
pub const SIZE_MAX: u32 = 4096;
pub const MARGIN_MAX: u32 = 16;
/// Below this quiet zone many phone scanners fail to find the code.
pub const MARGIN_MIN_SCANNABLE: u32 = 2;
/// Lowest fg/bg contrast ratio accepted; phone cameras need about this.
pub const CONTRAST_MIN: f64 = 3.0;

/// What is wrong with the options or the code; each message says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QrError {
    #[error("`format` must be `svg` or `png`, not `{0}`.")]
    Format(String),
    #[error("`size` must be a whole number of pixels from {SIZE_MIN} to {SIZE_MAX}, not `{0}`.")]
    Size(String),
    #[error("`margin` must be a whole number of modules from 0 to {MARGIN_MAX}, not `{0}`.")]
    Margin(String),
    #[error("`ecc` must be one of `L`, `M`, `Q`, `H`, not `{0}`.")]
    Ecc(String),
    #[error("`{option}` must be 6 hex digits without `#` (like `1a237e`), not `{value}`.")]
    Colour { option: &'static str, value: String },
    #[error(
        "`fg` is lighter than `bg`: many scanners cannot read light modules on a dark \
         background. Use a dark `fg` on a light `bg`."
    )]
    Inverted,
    #[error(
        "The contrast ratio of `fg` to `bg` is {ratio:.2}:1, below {CONTRAST_MIN}:1; \
         make `fg` darker or `bg` lighter."
    )]
    LowContrast { ratio: f64 },
    #[error(
        "A `margin` (quiet zone) of {0} modules is too narrow to scan reliably; \
         use at least {MARGIN_MIN_SCANNABLE}."
    )]
    QuietZone(u32),
    #[error(
        "This code needs {needed} modules across (with the margin); raise `size` to at \
         least {needed} or lower `margin` or `ecc`."
    )]
    TooSmall { needed: u32 },
    #[error("The text is too long for a QR code at this `ecc`; use a lower `ecc`.")]
    TooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Svg => "image/svg+xml",
            Format::Png => "image/png",
        }
    }
}

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub [u8; 3]);

impl Rgb {
    fn parse(option: &'static str, raw: &str) -> Result<Rgb, QrError> {
        let bad = || QrError::Colour {
            option,
            value: raw.to_owned(),
        };
        if raw.len() != 6 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 3];
        hex::decode_to_slice(raw, &mut out).map_err(|_| bad())?;
        Ok(Rgb(out))
    }

    fn hex(self) -> String {
        hex::encode(self.0)
    }

    /// WCAG 2 relative luminance: sRGB channels linearised, then weighted.
    pub fn luminance(self) -> f64 {
        let lin = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        let [r, g, b] = self.0;
        0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
    }
}

/// The WCAG contrast ratio of two colours, from 1 to 21.
pub fn contrast_ratio(a: Rgb, b: Rgb) -> f64 {
    let (la, lb) = (a.luminance(), b.luminance());
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

/// The options as sent; `None` means the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawOptions<'a> {
    pub format: Option<&'a str>,
    pub size: Option<&'a str>,
    pub margin: Option<&'a str>,
    pub ecc: Option<&'a str>,
    pub fg: Option<&'a str>,
    pub bg: Option<&'a str>,
}

/// Valid, scannable rendering options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QrOptions {
    pub format: Format,
    /// Width and height of the image in pixels.
    pub size: u32,
    /// Quiet zone in modules.
    pub margin: u32,
    pub ecc: EcLevel,
    pub fg: Rgb,
    pub bg: Rgb,
}

impl QrOptions {
    /// Parses and checks the options: first each one's syntax and range, then
    /// whether the combination scans.
    pub fn parse(raw: RawOptions<'_>) -> Result<QrOptions, QrError> {
        let format = match raw.format.map(str::to_ascii_lowercase).as_deref() {
            None | Some("svg") => Format::Svg,
            Some("png") => Format::Png,
            Some(_) => return Err(QrError::Format(raw.format.unwrap_or_default().to_owned())),
        };
        let size = parse_int(raw.size, 512, SIZE_MIN, SIZE_MAX).map_err(QrError::Size)?;
        let margin = parse_int(raw.margin, 4, 0, MARGIN_MAX).map_err(QrError::Margin)?;
        let ecc = match raw.ecc.map(str::to_ascii_uppercase).as_deref() {
            None | Some("M") => EcLevel::M,
            Some("L") => EcLevel::L,
            Some("Q") => EcLevel::Q,
            Some("H") => EcLevel::H,
            Some(_) => return Err(QrError::Ecc(raw.ecc.unwrap_or_default().to_owned())),
        };
        let fg = Rgb::parse("fg", raw.fg.unwrap_or("000000"))?;
        let bg = Rgb::parse("bg", raw.bg.unwrap_or("ffffff"))?;
        let options = QrOptions {
            format,
            size,
            margin,
            ecc,
            fg,
            bg,
        };
        options.check_scannable()?;
        Ok(options)
    }

    fn check_scannable(&self) -> Result<(), QrError> {
        if self.fg.luminance() > self.bg.luminance() {
            return Err(QrError::Inverted);
        }
        let ratio = contrast_ratio(self.fg, self.bg);
        if ratio < CONTRAST_MIN {
            return Err(QrError::LowContrast { ratio });
        }
        if self.margin < MARGIN_MIN_SCANNABLE {
            return Err(QrError::QuietZone(self.margin));
        }
        Ok(())
    }

    /// The options in one canonical form, for cache keys.
    pub fn normalised(&self) -> String {
        let format = match self.format {
            Format::Svg => "svg",
            Format::Png => "png",
        };
        let ecc = match self.ecc {
            EcLevel::L => "L",
            EcLevel::M => "M",
            EcLevel::Q => "Q",
            EcLevel::H => "H",
        };
        format!(
            "format={format}&size={}&margin={}&ecc={ecc}&fg={}&bg={}",
            self.size,
            self.margin,
            self.fg.hex(),
            self.bg.hex()
        )
    }
}

/// A whole number in `min..=max`, or the default when absent; the error is the
/// text as sent.
fn parse_int(raw: Option<&str>, default: u32, min: u32, max: u32) -> Result<u32, String> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(raw.to_owned()),
    }
}

/// A strong validator of the image: it depends only on the text and the
/// options, so it changes exactly when the picture would.
pub fn etag(text: &str, options: &QrOptions) -> String {
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    h.update([0]);
    h.update(options.normalised().as_bytes());
    format!("\"{}\"", hex::encode(&h.finalize()[..16]))
}

/// The modules of a code and where they land in the image.
struct Layout {
    /// Modules across, without the quiet zone.
    modules: u32,
    dark: Vec<bool>,
    /// Pixels per module (PNG).
    scale: u32,
    /// Pixels from the image edge to the first module (PNG).
    offset: u32,
}

impl Layout {
    fn new(text: &str, options: &QrOptions) -> Result<Layout, QrError> {
        let code = QrCode::with_error_correction_level(text.as_bytes(), options.ecc)
            .map_err(|_| QrError::TooLong)?;
        let modules = u32::try_from(code.width()).map_err(|_| QrError::TooLong)?;
        let total = modules + 2 * options.margin;
        if total > options.size {
            return Err(QrError::TooSmall { needed: total });
        }
        // Whole pixels per module keep edges sharp; what is left over widens
        // the quiet zone evenly on both sides.
        let scale = options.size / total;
        let offset = (options.size - scale * modules) / 2;
        let dark = code.to_colors().into_iter().map(|c| c == Color::Dark);
        Ok(Layout {
            modules,
            dark: dark.collect(),
            scale,
            offset,
        })
    }

    fn is_dark(&self, x: u32, y: u32) -> bool {
        let i = (y * self.modules + x) as usize;
        self.dark.get(i).copied().unwrap_or(false)
    }
}

/// Renders `text` as a QR code image: the bytes and their content type.
pub fn render(text: &str, options: &QrOptions) -> Result<(Vec<u8>, &'static str), QrError> {
    let layout = Layout::new(text, options)?;
    let bytes = match options.format {
        Format::Svg => svg(&layout, options).into_bytes(),
        Format::Png => png(&layout, options),
    };
    Ok((bytes, options.format.content_type()))
}

/// An SVG whose viewBox counts modules (quiet zone included), one unit square
/// per dark module, scaled to `size` pixels by the viewer.
fn svg(layout: &Layout, options: &QrOptions) -> String {
    let total = layout.modules + 2 * options.margin;
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
         version=\"1.1\" width=\"{size}\" height=\"{size}\" viewBox=\"0 0 {total} {total}\" \
         shape-rendering=\"crispEdges\"><rect width=\"{total}\" height=\"{total}\" \
         fill=\"#{bg}\"/><path fill=\"#{fg}\" d=\"",
        size = options.size,
        bg = options.bg.hex(),
        fg = options.fg.hex(),
    );
    for y in 0..layout.modules {
        for x in 0..layout.modules {
            if layout.is_dark(x, y) {
                // Writing to a String cannot fail.
                let _ = write!(
                    out,
                    "M{} {}h1v1h-1z",
                    x + options.margin,
                    y + options.margin
                );
            }
        }
    }
    out.push_str("\"/></svg>\n");
    out
}

fn png(layout: &Layout, options: &QrOptions) -> Vec<u8> {
    let span = layout.scale * layout.modules;
    let image = image::RgbImage::from_fn(options.size, options.size, |px, py| {
        let inside = |p: u32| p >= layout.offset && p < layout.offset + span;
        let dark = inside(px)
            && inside(py)
            && layout.is_dark(
                (px - layout.offset) / layout.scale,
                (py - layout.offset) / layout.scale,
            );
        image::Rgb(if dark { options.fg.0 } else { options.bg.0 })
    });
    let mut out = std::io::Cursor::new(Vec::new());
    // Encoding an in-memory RGB image to a Vec cannot fail.
    let _ = image.write_to(&mut out, image::ImageFormat::Png);
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wcag_contrast_of_black_on_white_is_21() {
        let r = contrast_ratio(Rgb([0, 0, 0]), Rgb([255, 255, 255]));
        assert!((r - 21.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn defaults_are_svg_512_margin_4_ecc_m_black_on_white() {
        let o = QrOptions::parse(RawOptions::default()).unwrap();
        assert_eq!(
            o.normalised(),
            "format=svg&size=512&margin=4&ecc=M&fg=000000&bg=ffffff"
        );
    }

    #[test]
    fn colours_are_case_insensitive_and_refuse_a_hash() {
        let raw = RawOptions {
            fg: Some("1A237E"),
            ..RawOptions::default()
        };
        assert_eq!(QrOptions::parse(raw).unwrap().fg, Rgb([0x1a, 0x23, 0x7e]));
        let raw = RawOptions {
            bg: Some("#ffffff"),
            ..RawOptions::default()
        };
        assert!(matches!(
            QrOptions::parse(raw),
            Err(QrError::Colour { option: "bg", .. })
        ));
    }

    #[test]
    fn equal_colours_are_low_contrast_and_a_light_fg_is_inverted() {
        let with = |fg, bg| {
            QrOptions::parse(RawOptions {
                fg: Some(fg),
                bg: Some(bg),
                ..RawOptions::default()
            })
        };
        assert!(matches!(
            with("777777", "777777"),
            Err(QrError::LowContrast { .. })
        ));
        assert!(matches!(
            with("777777", "888888"),
            Err(QrError::LowContrast { ratio }) if ratio < 1.5
        ));
        assert_eq!(with("ffffff", "000000"), Err(QrError::Inverted));
        assert!(with("1a237e", "fff8e1").is_ok());
    }

    #[test]
    fn the_etag_is_quoted_and_follows_text_and_options() {
        let o = QrOptions::parse(RawOptions::default()).unwrap();
        let png = QrOptions {
            format: Format::Png,
            ..o
        };
        let tag = etag("https://scan.example/a", &o);
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34);
        assert_eq!(tag, etag("https://scan.example/a", &o));
        assert_ne!(tag, etag("https://scan.example/b", &o));
        assert_ne!(tag, etag("https://scan.example/a", &png));
    }
}
