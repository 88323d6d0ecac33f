"""KServe V2 / Open Inference Protocol server for ONNX models."""
