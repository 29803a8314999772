"""The edge: signed resize/format URLs, libvips transforms and caching in front of the origin."""
