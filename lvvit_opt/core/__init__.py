"""Infrastructure below every stage: errors, safe file I/O, the one ONNX reader and writer and
its model gate, tensor specs, CANN toolkit discovery, progress, logs, tables and resources.
Imports nothing above it (ARCHITECTURE.md)."""
