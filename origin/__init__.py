"""The origin: image blob writes and reads over a local directory, S3 or memory."""
