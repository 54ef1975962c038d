//! Per-format scanners for model formats that are not archives or pickles.

pub(crate) mod gguf;
pub(crate) mod keras;
pub(crate) mod numpy;
pub(crate) mod onnx;
pub(crate) mod safetensors;
pub(crate) mod template;
pub(crate) mod tensorflow;

use crate::protobuf;
use crate::scanner::Ctx;

/// Content that starts like a protobuf message: ONNX, a SavedModel, a frozen GraphDef or Keras metadata. Content
/// that does not parse as a message to its end is not protobuf and is left alone.
pub(crate) fn protobuf_model(ctx: &mut Ctx<'_>, data: &[u8], _name: Option<&str>) {
    if !protobuf::is_message(data) {
        return;
    }
    if onnx::looks_like(data) {
        ctx.format("onnx");
        onnx::scan(ctx, data);
    } else if tensorflow::looks_like(data) {
        ctx.format("tensorflow");
        tensorflow::scan(ctx, data);
    }
}
