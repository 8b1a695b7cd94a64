"""The power profiler: NVML, emulator and Prometheus sources to one Parquet schema."""
