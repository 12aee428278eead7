"""irn_trt.runtime: torch-free inference, image I/O, resizing and metrics."""
