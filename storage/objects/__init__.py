"""Object storage: buckets and paths, the store Protocol, local and S3 backends, URL signing."""
