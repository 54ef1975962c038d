//! Encoded images (PNG, JPEG) in a KServe v2 `BYTES` tensor, decoded to an `FP32` batch in `[0, 1]`.
//!
//! The header is read first and its dimensions checked against the limits before any pixel is decoded; the decoder
//! then runs with an allocation cap, so a decompression bomb is refused, not expanded.

use std::io::Cursor;

use rampart_infer::{Tensor, TensorData};

use crate::sanitise::ImageShape;
use crate::DefendError;

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageLimits {
    /// Largest encoded image, in bytes.
    pub max_encoded_bytes: usize,
    /// Largest width and height in pixels.
    pub max_side: u32,
    /// Largest decoded image (width × height × 4 bytes), in bytes.
    pub max_decoded_bytes: u64,
    /// Most images in one request.
    pub max_images: usize,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_encoded_bytes: 4 << 20,
            max_side: 4096,
            max_decoded_bytes: 64 << 20,
            max_images: 64,
        }
    }
}

/// Decodes every element of a `BYTES` tensor to an image of exactly `shape` (grey or RGB), as rows of `[0, 1]`
/// values, returned as an `FP32` tensor of shape `[N, height * width * channels]` named `name`.
pub fn decode_images(
    tensor: &Tensor,
    shape: ImageShape,
    limits: &ImageLimits,
    name: &str,
) -> Result<Tensor, DefendError> {
    let TensorData::Bytes(images) = &tensor.data else {
        return Err(DefendError::Input(format!(
            "tensor `{}` must be BYTES holding PNG or JPEG images",
            tensor.name
        )));
    };
    if images.is_empty() || images.len() > limits.max_images {
        return Err(DefendError::Input(format!(
            "tensor `{}` holds {} images; 1 to {} are allowed",
            tensor.name,
            images.len(),
            limits.max_images
        )));
    }
    let mut values = Vec::with_capacity(images.len() * shape.len());
    for (index, bytes) in images.iter().enumerate() {
        values.extend(
            decode_one(bytes, shape, limits)
                .map_err(|reason| DefendError::Image { index, reason })?,
        );
    }
    Tensor::new(
        name,
        vec![images.len(), shape.len()],
        TensorData::Fp32(values),
    )
    .map_err(|e| DefendError::Input(e.to_string()))
}

/// What an image's header may allocate beyond its pixels (ICC profile, text, EXIF): far above any real profile.
const METADATA_BYTES: u64 = 1 << 20;

/// Decodes one image; the error is the reason, for [`DefendError::Image`].
pub fn decode_one(
    bytes: &[u8],
    shape: ImageShape,
    limits: &ImageLimits,
) -> Result<Vec<f32>, String> {
    if bytes.len() > limits.max_encoded_bytes {
        return Err(format!(
            "{} bytes exceed the limit of {} bytes",
            bytes.len(),
            limits.max_encoded_bytes
        ));
    }
    let format = match image::guess_format(bytes) {
        Ok(f @ (image::ImageFormat::Png | image::ImageFormat::Jpeg)) => f,
        _ => return Err("not a PNG or JPEG image".into()),
    };
    // The header is read under limits too: a PNG's header chunks (an ICC profile, compressed) would otherwise be
    // inflated up to the image crate's default of 512 MiB before the dimensions are known.
    let mut header = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut caps = image::Limits::default();
    caps.max_alloc = Some(METADATA_BYTES.min(limits.max_decoded_bytes));
    header.limits(caps.clone());
    let (width, height) = header.into_dimensions().map_err(|e| {
        // The decoder's words name its internals; the client is told what to fix.
        tracing::debug!(error = %e, "image header refused");
        "cannot read the image header: the image is corrupt, truncated, or past the limits"
            .to_owned()
    })?;
    if width > limits.max_side || height > limits.max_side {
        return Err(format!(
            "{width}x{height} pixels exceed the limit of {} per side",
            limits.max_side
        ));
    }
    if u64::from(width) * u64::from(height) * 4 > limits.max_decoded_bytes {
        return Err(format!(
            "{width}x{height} pixels would decode past the limit of {} bytes",
            limits.max_decoded_bytes
        ));
    }
    if (width as usize, height as usize) != (shape.width, shape.height) {
        return Err(format!(
            "the image is {width}x{height}, the model takes {}x{}",
            shape.width, shape.height
        ));
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    // The pixels and the header's metadata, no more.
    caps.max_image_width = Some(limits.max_side);
    caps.max_image_height = Some(limits.max_side);
    let pixels = u64::from(width) * u64::from(height) * 4;
    caps.max_alloc = Some((pixels + METADATA_BYTES).min(limits.max_decoded_bytes));
    reader.limits(caps);
    let decoded = reader
        .decode()
        .map_err(|e| {
            tracing::debug!(error = %e, "image refused");
            "cannot decode the image: it is corrupt, truncated, or a variant not supported (PNG, and baseline or \
             progressive JPEG, are)"
                .to_owned()
        })?;
    let raw = match shape.channels {
        1 => decoded.into_luma8().into_raw(),
        3 => decoded.into_rgb8().into_raw(),
        other => {
            return Err(format!(
                "the model takes {other} channels; only 1 or 3 are supported"
            ))
        }
    };
    Ok(raw.into_iter().map(|b| f32::from(b) / 255.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageEncoder;

    fn png(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(pixels, width, height, image::ExtendedColorType::L8)
            .unwrap();
        out
    }

    const SHAPE: ImageShape = ImageShape {
        height: 8,
        width: 8,
        channels: 1,
    };

    #[test]
    fn decodes_png_and_jpeg_to_unit_range() {
        let pixels: Vec<u8> = (0..64).map(|i| (i * 4) as u8).collect();
        let t = Tensor::new("img", vec![1], TensorData::Bytes(vec![png(8, 8, &pixels)])).unwrap();
        let out = decode_images(&t, SHAPE, &ImageLimits::default(), "input").unwrap();
        assert_eq!(out.shape, vec![1, 64]);
        let TensorData::Fp32(v) = out.data else {
            panic!()
        };
        assert_eq!(v[1], 4.0 / 255.0);
        assert_eq!(v[63], 252.0 / 255.0);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .write_image(&pixels, 8, 8, image::ExtendedColorType::L8)
            .unwrap();
        let v = decode_one(&jpeg, SHAPE, &ImageLimits::default()).unwrap();
        assert!((v[63] - 252.0 / 255.0).abs() < 0.05);
    }

    #[test]
    fn refuses_bombs_garbage_and_wrong_sizes() {
        let limits = ImageLimits::default();
        // A 20000x20000 grey PNG compresses to a few hundred kB; the header check refuses it before decoding.
        let mut header_only = png(1, 1, &[0]);
        // Patch the IHDR width and height (bytes 16..24) to 20000 each; the CRC mismatch must not matter.
        header_only[16..20].copy_from_slice(&20_000_u32.to_be_bytes());
        header_only[20..24].copy_from_slice(&20_000_u32.to_be_bytes());
        let err = decode_one(&header_only, SHAPE, &limits).unwrap_err();
        assert!(err.contains("exceed") || err.contains("header"), "{err}");
        let big = png(16, 16, &[0; 256]);
        assert!(decode_one(&big, SHAPE, &limits)
            .unwrap_err()
            .contains("takes 8x8"));
        let tight = ImageLimits {
            max_side: 4,
            ..limits
        };
        assert!(decode_one(&big, SHAPE, &tight)
            .unwrap_err()
            .contains("per side"));
        assert!(decode_one(b"GIF89a....", SHAPE, &limits)
            .unwrap_err()
            .contains("not a PNG"));
        let mut truncated = png(8, 8, &[7; 64]);
        truncated.truncate(40);
        assert!(decode_one(&truncated, SHAPE, &limits).is_err());
        let fp = Tensor::new("img", vec![1], TensorData::Fp32(vec![0.0])).unwrap();
        assert!(decode_images(&fp, SHAPE, &limits, "input").is_err());
    }

    fn png_with_profile(profile: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = image::codecs::png::PngEncoder::new(&mut out);
        encoder.set_icc_profile(profile).unwrap();
        encoder
            .write_image(&[9; 64], 8, 8, image::ExtendedColorType::L8)
            .unwrap();
        out
    }

    /// Decodes the image named by `RAMPART_TEST_IMAGE` (run by `a_header_is_inflated_within_its_budget` under a
    /// memory limit).
    #[test]
    #[ignore = "run by a_header_is_inflated_within_its_budget, under a memory limit"]
    fn decode_the_given_image() {
        let Some(path) = std::env::var_os("RAMPART_TEST_IMAGE") else {
            return;
        };
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(
            decode_one(&bytes, SHAPE, &ImageLimits::default()).unwrap(),
            vec![9.0 / 255.0; 64]
        );
    }

    #[test]
    fn a_header_is_inflated_within_its_budget() {
        // A valid 8x8 image whose ICC profile, 384 MiB of zeros, compresses to well under a megabyte. Its header was
        // inflated whole (up to the image crate's default of 512 MiB an image) before the dimensions were known;
        // decoded in a process limited to 256 MiB of address space, the image fails unless the header stays
        // within its budget (the profile is then dropped: the pixels are all the gateway needs).
        let bomb = png_with_profile(vec![0; 384 << 20]);
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.png");
        std::fs::write(&path, &bomb).unwrap();
        let child = std::process::Command::new("bash")
            .arg("-c")
            .arg("ulimit -v 262144; exec \"$0\" --exact image_input::tests::decode_the_given_image --ignored --quiet --test-threads 1")
            .arg(std::env::current_exe().unwrap())
            .env("RAMPART_TEST_IMAGE", &path)
            .output()
            .unwrap();
        assert!(
            child.status.success(),
            "{}{}",
            String::from_utf8_lossy(&child.stdout),
            String::from_utf8_lossy(&child.stderr)
        );
        // A profile of a real size decodes as well.
        let fine = png_with_profile(vec![0; 4096]);
        assert_eq!(
            decode_one(&fine, SHAPE, &ImageLimits::default()).unwrap(),
            vec![9.0 / 255.0; 64]
        );
    }
}
