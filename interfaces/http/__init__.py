"""The HTTP edge: the OCI distribution pull API (and later the admin API), on Litestar."""
